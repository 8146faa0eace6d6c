/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Telemetry context: per-core rings, the drain thread, per-op histograms,
 * subscribers, the built-in rate-limited error log, and the metric tables.
 *
 * Threads:
 *   - each core emits into its own ring (cn_tel_emit, inline in cn_tel.h);
 *   - one drain pass at a time, under priv->lock: the drain thread, or
 *     cn_tel_drain_once() on a caller's thread. Whoever holds the lock is the
 *     only consumer of the rings and the only writer of histograms, drain
 *     stats, the pairer and the subscribers;
 *   - readers on any thread: relaxed loads (cn_tel_op_hist, cn_tel_drain_stats);
 *   - create / subscribe / start / stop / destroy: one control thread.
 *
 * Rings hold exactly ring_size events (RING_F_EXACT_SZ: DPDK sizes the ring
 * to the next power of two above ring_size, so it allocates 2 * ring_size
 * slots, and caps it at ring_size), so "a ring of 64 takes 64 events before
 * it drops" holds literally.
 *
 * Trace rings (--trace-output) are separate rings of 32-byte slots, plain
 * power-of-two rings (trace_ring_size slots, trace_ring_size - 1 usable). A
 * record is a two-slot header (struct trace_ent) followed by one slot per
 * key, reserved and published in one zero-copy enqueue, so the drain never
 * sees half a record: once it holds a header's first slot, the rest is there.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_common.h>
#include <rte_errno.h>
#include <rte_cycles.h>
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <rte_ring_peek_zc.h>

#include "cn_tel.h"

#define TEL_BURST	 256	/* events per dequeue */
#define TEL_MAX_SUBS	 16	/* including the built-in log */
#define TEL_PAIRER_CAP	 65536	/* open sessions the drain can hold */
#define TEL_EXPIRE_S	 10	/* a START unanswered this long is unmatched */
#define TEL_LOG_PERIOD_S 1	/* at most one error line per op per period */
#define TRACE_BUF	 2048	/* trace slots per dequeue: holds the largest record */
#define TRACE_RING_MAX	 (1u << 24)
#define TRACE_FLUSH_MS	 20	/* the longest buffered trace records wait under load */

/*
 * A trace record's header on a trace ring: two slots (nkeys in the first, so
 * the drain knows a record's size from its first slot); nkeys key slots
 * follow.
 */
struct trace_ent {
	uint64_t tsc;	    /* the end of the operation */
	uint64_t session;
	uint64_t begin_tsc; /* its start (reserve, pin); 0: one instant */
	uint32_t nkeys;
	uint32_t val;
	int32_t status;
	uint16_t core;
	uint8_t kind;
	uint8_t pad[25];
};

#define TRACE_SLOT  CN_KEY_LEN
#define TRACE_HSLOT (sizeof(struct trace_ent) / TRACE_SLOT) /* header slots */

struct trace_slot {
	uint8_t b[TRACE_SLOT];
};

_Static_assert(sizeof(struct trace_ent) == 2 * TRACE_SLOT, "a trace header is two slots");
_Static_assert(offsetof(struct trace_ent, nkeys) + 4 <= TRACE_SLOT, "nkeys in the first slot");
_Static_assert(TRACE_BUF > CN_TRACE_MAX_KEYS + TRACE_HSLOT, "the drain buffer holds a record");

/* TSC -> CLOCK_MONOTONIC / CLOCK_REALTIME, re-anchored every drain pass. */
struct trace_clock {
	uint64_t tsc;
	uint64_t mono_ns;
	uint64_t wall_ns;
};

/* ---- metric and op tables ---- */

const struct cn_metric_desc cn_tel_core_metric_desc[] = {CN_TEL_CORE_METRICS(CN_METRIC_DESC)};
const unsigned cn_tel_core_metric_count = 0 CN_TEL_CORE_METRICS(CN_METRIC_COUNT);
const struct cn_metric_desc cn_tel_drain_metric_desc[] = {CN_TEL_DRAIN_METRICS(CN_METRIC_DESC)};
const unsigned cn_tel_drain_metric_count = 0 CN_TEL_DRAIN_METRICS(CN_METRIC_COUNT);

const char *const cn_tel_op_names[CN_TEL_OP_MAX] = {
#define X(n, h) [CN_TEL_OP_##n] = #n,
	CN_TEL_OPS(X)
#undef X
};

const char *const cn_tel_op_help[CN_TEL_OP_MAX] = {
#define X(n, h) [CN_TEL_OP_##n] = h,
	CN_TEL_OPS(X)
#undef X
};

int cn_tel_op_find(const char *name)
{
	if (name == NULL)
		return -1;
	for (int i = 0; i < CN_TEL_OP_MAX; i++)
		if (strcmp(name, cn_tel_op_names[i]) == 0)
			return i;
	return -1;
}

/* ---- private state ---- */

struct tel_sub {
	const struct cn_tel_sub_ops *ops;
	void *arg;
};

struct tel_log_op {
	uint64_t last_tsc;
	uint64_t suppressed;
	bool logged;
};

/* The built-in error log; slot CN_TEL_OP_MAX collects unknown ops. */
struct tel_log {
	uint64_t period_tsc;
	struct tel_log_op op[CN_TEL_OP_MAX + 1];
};

enum tel_state {
	TEL_CREATED,
	TEL_RUNNING,
	TEL_STOPPED,
};

struct cn_tel_priv {
	pthread_mutex_t lock; /* one drain pass at a time */
	unsigned ring_size;   /* events each ring holds; 0 when disabled */
	uint64_t hz;
	enum tel_state state;
	bool thread_started;
	bool stop;	      /* atomic: tells the drain thread to leave */
	pthread_t thread;
	struct cn_tel_pairer *pairer;
	uint64_t next_expire_tsc;
	uint64_t last_pass_tsc; /* end of the last drain pass (relaxed atomic): a heartbeat */
	unsigned nsub;
	struct tel_sub sub[TEL_MAX_SUBS];
	struct tel_log log;
	struct cn_trace_writer *tw;	/* trace recording; NULL without */
	struct trace_slot *tbuf;	/* TRACE_BUF slots */
	uint64_t trace_lost;		/* trace_drops already reported in a LOST record */
	uint64_t trace_flush_tsc;	/* the last write() of the trace buffer */
	bool trace_failed;		/* the writer's error was logged */
	struct trace_clock tclk;
	struct cn_tel_drain_stats st CN_CACHE_ALIGNED;
	struct cn_hist hist[CN_TEL_OP_MAX];
	struct cn_tel_event burst[TEL_BURST];
} CN_CACHE_ALIGNED;

static uint64_t tsc_to_ns(uint64_t d, uint64_t hz)
{
	if (hz == 0)
		return 0;
	return (d / hz) * UINT64_C(1000000000) + (d % hz) * UINT64_C(1000000000) / hz;
}

static const char *op_name(unsigned op)
{
	return op < CN_TEL_OP_MAX ? cn_tel_op_names[op] : "unknown";
}

/* ---- the built-in log subscriber ---- */

/*
 * Logs END events with an error status, except the expected misses
 * (-ENOENT: key absent, -EEXIST: already stored). At most one line per op per
 * second; the next line (or the flush after the quiet second, or close) says
 * how many were suppressed in between.
 */
static int log_event(void *arg, const struct cn_tel_event *ev)
{
	struct tel_log *l = arg;
	struct tel_log_op *o;
	uint64_t now;
	char more[48] = "";

	if (ev->type != CN_TEL_END || ev->status >= 0 || ev->status == -ENOENT ||
	    ev->status == -EEXIST)
		return 0;
	o = &l->op[ev->op < CN_TEL_OP_MAX ? ev->op : CN_TEL_OP_MAX];
	now = rte_rdtsc();
	if (o->logged && now - o->last_tsc < l->period_tsc) {
		o->suppressed++;
		return 0;
	}
	if (o->suppressed != 0)
		snprintf(more, sizeof(more), " (%" PRIu64 " similar suppressed)", o->suppressed);
	RTE_LOG(WARNING, USER1,
		"cachenode: %s failed on core %u: %s (status %d, session %#" PRIx64 ")%s\n",
		op_name(ev->op), (unsigned)ev->core,
		strerror(ev->status == INT32_MIN ? INT32_MAX : -ev->status), (int)ev->status,
		ev->session, more);
	o->suppressed = 0;
	o->last_tsc = now;
	o->logged = true;
	return 0;
}

static void log_suppressed(struct tel_log *l, bool all)
{
	uint64_t now = rte_rdtsc();

	for (unsigned i = 0; i <= CN_TEL_OP_MAX; i++) {
		struct tel_log_op *o = &l->op[i];

		if (o->suppressed == 0 || (!all && now - o->last_tsc < l->period_tsc))
			continue;
		RTE_LOG(WARNING, USER1, "cachenode: %s: %" PRIu64 " more failures suppressed\n",
			op_name(i), o->suppressed);
		o->suppressed = 0;
		o->last_tsc = now;
	}
}

static int log_flush(void *arg)
{
	log_suppressed(arg, false);
	return 0;
}

/* Does not free: the state lives in cn_tel_priv. */
static void log_close(void *arg)
{
	log_suppressed(arg, true);
}

static const struct cn_tel_sub_ops log_ops = {
	.name = "log",
	.event = log_event,
	.flush = log_flush,
	.close = log_close,
};

/* ---- the drain ---- */

static void sub_failed(struct cn_tel_priv *p)
{
	CN_STAT_INC(&p->st, subscriber_errors);
}

static void span_done(struct cn_tel_priv *p, const struct cn_tel_span *sp)
{
	CN_STAT_INC(&p->st, spans);
	if (sp->op < CN_TEL_OP_MAX) {
		uint64_t d = sp->end_tsc > sp->start_tsc ? sp->end_tsc - sp->start_tsc : 0;

		cn_hist_add(&p->hist[sp->op], tsc_to_ns(d, p->hz));
	}
	for (unsigned i = 0; i < p->nsub; i++) {
		const struct cn_tel_sub_ops *ops = p->sub[i].ops;

		if (ops->span != NULL && ops->span(p->sub[i].arg, sp) < 0)
			sub_failed(p);
	}
}

static void handle_event(struct cn_tel_priv *p, const struct cn_tel_event *ev)
{
	struct cn_tel_span sp;
	unsigned open;

	for (unsigned i = 0; i < p->nsub; i++) {
		const struct cn_tel_sub_ops *ops = p->sub[i].ops;

		if (ops->event != NULL && ops->event(p->sub[i].arg, ev) < 0)
			sub_failed(p);
	}
	if (ev->type != CN_TEL_START && ev->type != CN_TEL_END)
		return; /* POINT: subscribers only */
	open = cn_tel_pairer_open(p->pairer);
	if (cn_tel_pairer_feed(p->pairer, ev, &sp) == 1)
		span_done(p, &sp);
	else if (cn_tel_pairer_open(p->pairer) == open)
		CN_STAT_INC(&p->st, spans_unmatched); /* table full, or a duplicate half */
}

/* ---- trace records ---- */

/* Copy @n slots from @src to slots [at, at + n) of a zero-copy reservation. */
static void zc_put(const struct rte_ring_zc_data *z, unsigned at, const void *src, unsigned n)
{
	unsigned first = at < z->n1 ? RTE_MIN(n, z->n1 - at) : 0;

	if (first != 0)
		memcpy((struct trace_slot *)z->ptr1 + at, src, (size_t)first * TRACE_SLOT);
	if (first < n)
		memcpy((struct trace_slot *)z->ptr2 + (at + first - z->n1),
		       (const struct trace_slot *)src + first, (size_t)(n - first) * TRACE_SLOT);
}

void cn_tel_trace_put(struct cn_tel *t, unsigned core, enum cn_trace_kind kind, uint64_t session,
		      const struct cn_key *keys, uint32_t nkeys, uint32_t val, int32_t status,
		      uint64_t begin_tsc)
{
	struct cn_tel_core *c = &t->core[core];
	struct rte_ring_zc_data zcd;
	struct trace_ent e;
	uint32_t n = nkeys + TRACE_HSLOT;

	if (nkeys > CN_TRACE_MAX_KEYS ||
	    rte_ring_enqueue_zc_bulk_elem_start(c->trace, TRACE_SLOT, n, &zcd, NULL) == 0) {
		CN_STAT_INC(&c->st, trace_drops);
		return;
	}
	e = (struct trace_ent){
		.tsc = rte_rdtsc(),
		.session = session,
		.begin_tsc = begin_tsc,
		.nkeys = nkeys,
		.val = val,
		.status = status,
		.core = (uint16_t)core,
		.kind = (uint8_t)kind,
	};
	zc_put(&zcd, 0, &e, TRACE_HSLOT);
	zc_put(&zcd, TRACE_HSLOT, keys, nkeys);
	rte_ring_enqueue_zc_elem_finish(c->trace, n);
	CN_STAT_INC(&c->st, trace_emitted);
}

static void trace_clock_now(struct trace_clock *k)
{
	struct timespec m, w;

	clock_gettime(CLOCK_MONOTONIC, &m);
	clock_gettime(CLOCK_REALTIME, &w);
	k->tsc = rte_rdtsc();
	k->mono_ns = (uint64_t)m.tv_sec * UINT64_C(1000000000) + (uint64_t)m.tv_nsec;
	k->wall_ns = (uint64_t)w.tv_sec * UINT64_C(1000000000) + (uint64_t)w.tv_nsec;
}

/* @base (the clock at k->tsc) moved to @tsc, which may be before or after it. */
static uint64_t trace_clock_at(const struct trace_clock *k, uint64_t base, uint64_t tsc,
			       uint64_t hz)
{
	uint64_t d;

	if (tsc >= k->tsc)
		return base + tsc_to_ns(tsc - k->tsc, hz);
	d = tsc_to_ns(k->tsc - tsc, hz);
	return base > d ? base - d : 0;
}

/* One record from @slots: its header, then its keys. */
static void trace_write(struct cn_tel_priv *p, const struct trace_slot *slots)
{
	struct trace_ent e;
	struct cn_trace_op op;

	memcpy(&e, slots, sizeof(e));
	op = (struct cn_trace_op){
		.mono_ns = trace_clock_at(&p->tclk, p->tclk.mono_ns, e.tsc, p->hz),
		.wall_ns = trace_clock_at(&p->tclk, p->tclk.wall_ns, e.tsc, p->hz),
		.dur_ns = e.begin_tsc != 0 && e.tsc > e.begin_tsc ? tsc_to_ns(e.tsc - e.begin_tsc,
									      p->hz)
								  : 0,
		.op_id = e.session,
		.core = e.core,
		.status = e.status,
		.nkeys = e.nkeys,
		.val = e.val,
	};
	if (op.dur_ns > op.mono_ns)
		op.dur_ns = op.mono_ns;
	cn_trace_writer_op(p->tw, e.kind, &op, (const struct cn_key *)(slots + TRACE_HSLOT));
}

/* The TSC of the record starting at @slot (its first slot holds it). */
static uint64_t slot_tsc(const struct trace_slot *slot)
{
	uint64_t tsc;

	memcpy(&tsc, slot->b + offsetof(struct trace_ent, tsc), sizeof(tsc));
	return tsc;
}

static uint32_t slot_nkeys(const struct trace_slot *slot)
{
	uint32_t n;

	memcpy(&n, slot->b + offsetof(struct trace_ent, nkeys), sizeof(n));
	return n;
}

/*
 * Empty the trace rings into the writer (at most one ring's capacity per
 * core per pass), then write a LOST record if records were dropped since
 * the last one, and flush. Returns the slots moved; *lag as in drain_pass.
 */
static unsigned trace_pass(struct cn_tel *t, uint64_t *lag)
{
	struct cn_tel_priv *p = t->priv;
	struct cn_trace_writer_stats ws;
	uint64_t drops = 0;
	unsigned moved = 0;

	trace_clock_now(&p->tclk);
	for (unsigned c = 0; c < t->ncores; c++) {
		struct rte_ring *r = t->core[c].trace;
		unsigned budget = rte_ring_get_capacity(r);

		while (budget > 0) {
			unsigned want = RTE_MIN(budget, (unsigned)TRACE_BUF);
			unsigned got = rte_ring_sc_dequeue_burst_elem(r, p->tbuf, sizeof(p->tbuf[0]),
								      want, NULL);
			unsigned i = 0;
			uint64_t now = rte_rdtsc();
			bool full = got == want; /* the ring may hold more */

			if (got == 0)
				break;
			if (now > slot_tsc(&p->tbuf[0]) && now - slot_tsc(&p->tbuf[0]) > *lag)
				*lag = now - slot_tsc(&p->tbuf[0]);
			moved += got;
			budget -= RTE_MIN(budget, got);
			while (i < got) {
				unsigned need = TRACE_HSLOT + slot_nkeys(&p->tbuf[i]);

				if (i + need > got) {
					/* the burst ended inside a record: the rest is published */
					unsigned have = got - i, more;

					memmove(p->tbuf, &p->tbuf[i], have * sizeof(p->tbuf[0]));
					more = rte_ring_sc_dequeue_bulk_elem(r, &p->tbuf[have],
									     sizeof(p->tbuf[0]),
									     need - have, NULL);
					moved += more;
					i = 0;
					got = have + more;
					if (more != need - have)
						break; /* cannot happen: enqueues are all or nothing */
				}
				trace_write(p, &p->tbuf[i]);
				i += need;
			}
			if (!full)
				break;
		}
		drops += CN_STAT_GET(&t->core[c].st, trace_drops);
	}
	if (drops > p->trace_lost) {
		cn_trace_writer_lost(p->tw, drops - p->trace_lost, p->tclk.mono_ns);
		p->trace_lost = drops;
		moved++;
	}
	/*
	 * Hand the buffer to the kernel when the rings ran dry or every
	 * TRACE_FLUSH_MS under load, not after every pass: a drain that never
	 * sleeps would otherwise make one write() per handful of records.
	 */
	if (moved == 0 || p->tclk.tsc - p->trace_flush_tsc >= p->hz / 1000 * TRACE_FLUSH_MS) {
		cn_trace_writer_flush(p->tw);
		p->trace_flush_tsc = p->tclk.tsc;
	}
	cn_trace_writer_stats(p->tw, &ws);
	CN_STAT_SET(&p->st, trace_written, ws.records);
	CN_STAT_SET(&p->st, trace_bytes, ws.bytes);
	CN_STAT_SET(&p->st, trace_files, ws.files);
	CN_STAT_SET(&p->st, trace_errors, ws.errors);
	if (ws.errors != 0 && !p->trace_failed) {
		p->trace_failed = true;
		RTE_LOG(ERR, USER1, "cachenode: trace %s: write failed; recording stopped, "
			"later records are counted in trace_errors\n", cn_trace_writer_path(p->tw));
	}
	return moved;
}

/*
 * One pass over every ring, under p->lock. Takes at most ring_size events
 * from a core per pass so a busy core cannot keep the drain from the others.
 * drain_lag_ns is set by every pass (0 when it found nothing waiting): the largest (dequeue time - tsc of the oldest event of a
 * burst), over the event and the trace rings. Returns the events and trace
 * slots moved.
 */
static unsigned drain_pass(struct cn_tel *t)
{
	struct cn_tel_priv *p = t->priv;
	unsigned moved = 0, traced = 0;
	uint64_t lag = 0, now;

	for (unsigned c = 0; t->enabled && c < t->ncores; c++) {
		struct rte_ring *r = t->core[c].ring;
		unsigned budget = p->ring_size;

		while (budget > 0) {
			unsigned want = RTE_MIN(budget, (unsigned)TEL_BURST);
			unsigned n = rte_ring_sc_dequeue_burst_elem(r, p->burst, sizeof(p->burst[0]),
								    want, NULL);

			if (n == 0)
				break;
			now = rte_rdtsc();
			/* a ring is in time order: burst[0] is the oldest of the burst */
			if (now > p->burst[0].tsc && now - p->burst[0].tsc > lag)
				lag = now - p->burst[0].tsc;
			for (unsigned i = 0; i < n; i++)
				handle_event(p, &p->burst[i]);
			moved += n;
			budget -= n;
			if (n < want)
				break;
		}
	}
	if (t->tracing && p->tw != NULL)
		traced = trace_pass(t, &lag);
	CN_STAT_INC(&p->st, drain_passes);
	/* an empty pass means nothing waits: the lag is 0 until events wait again */
	CN_STAT_SET(&p->st, drain_lag_ns, tsc_to_ns(lag, p->hz));
	if (moved != 0) {
		CN_STAT_ADD(&p->st, drained, moved);
		for (unsigned i = 0; i < p->nsub; i++) {
			const struct cn_tel_sub_ops *ops = p->sub[i].ops;

			if (ops->flush != NULL && ops->flush(p->sub[i].arg) < 0)
				sub_failed(p);
		}
	}
	now = rte_rdtsc();
	__atomic_store_n(&p->last_pass_tsc, now, __ATOMIC_RELAXED);
	if (t->enabled && now >= p->next_expire_tsc) {
		CN_STAT_ADD(&p->st, spans_unmatched, cn_tel_pairer_expire(p->pairer, now));
		p->next_expire_tsc = now + p->hz;
	}
	return moved + traced;
}

uint64_t cn_tel_drain_age_ns(const struct cn_tel *t)
{
	uint64_t last, now = rte_rdtsc();

	if (t == NULL || (!t->enabled && !t->tracing) || t->priv == NULL)
		return 0;
	last = __atomic_load_n(&t->priv->last_pass_tsc, __ATOMIC_RELAXED);
	return last == 0 || now < last ? 0 : tsc_to_ns(now - last, t->priv->hz);
}

unsigned cn_tel_drain_once(struct cn_tel *t)
{
	unsigned n;

	if (t == NULL || (!t->enabled && !t->tracing))
		return 0;
	pthread_mutex_lock(&t->priv->lock);
	n = drain_pass(t);
	pthread_mutex_unlock(&t->priv->lock);
	return n;
}

static void *drain_main(void *arg)
{
	struct cn_tel *t = arg;
	long idle_us = CN_TEL_DRAIN_IDLE_US;

	while (!__atomic_load_n(&t->priv->stop, __ATOMIC_ACQUIRE)) {
		struct timespec idle;

		if (cn_tel_drain_once(t) != 0) {
			idle_us = CN_TEL_DRAIN_IDLE_US;
			continue;
		}
		idle = (struct timespec){.tv_nsec = idle_us * 1000L};
		nanosleep(&idle, NULL);
		idle_us = idle_us * 2 > CN_TEL_DRAIN_IDLE_MAX_US ? CN_TEL_DRAIN_IDLE_MAX_US : idle_us * 2;
	}
	return NULL;
}

/* ---- life cycle ---- */

static void free_rings(struct cn_tel *t)
{
	for (unsigned c = 0; c < t->ncores; c++) {
		rte_ring_free(t->core[c].ring);
		t->core[c].ring = NULL;
		rte_ring_free(t->core[c].trace);
		t->core[c].trace = NULL;
	}
}

/* The per-core trace rings and the drain's buffer for them. */
static int create_trace_rings(struct cn_tel *t, const struct cn_tel_cfg *cfg, const char *name)
{
	char rname[RTE_RING_NAMESIZE];

	t->priv->tbuf = malloc(TRACE_BUF * sizeof(struct trace_slot));
	if (t->priv->tbuf == NULL)
		return -ENOMEM;
	for (unsigned c = 0; c < cfg->ncores; c++) {
		snprintf(rname, sizeof(rname), "%s_trc%u", name, c);
		t->core[c].trace = rte_ring_create_elem(rname, TRACE_SLOT,
							cfg->trace_ring_size, cfg->socket_id,
							RING_F_SP_ENQ | RING_F_SC_DEQ);
		if (t->core[c].trace == NULL)
			return rte_errno > 0 ? -rte_errno : -ENOMEM;
	}
	return 0;
}

/*
 * cn_tel_create - validate @cfg and build the context; no thread yet.
 * ring_size 0 means CN_TEL_RING_DEFAULT; otherwise a power of two >= 64, and
 * each ring then holds exactly ring_size events. Ring names are
 * "<cfg->name>_tel<core>" and "<cfg->name>_trc<core>" (name NULL: "cn") and
 * must be unique in the process: a second context with the same name fails
 * with -EEXIST, a name too long for RTE_RING_NAMESIZE with -ENAMETOOLONG.
 * With cfg->enabled false no event ring and no pairer is made; emit returns
 * at once and readers report 0. trace_ring_size != 0 makes the trace rings
 * (whether events are enabled or not); a writer must then be attached
 * before cn_tel_start().
 * Returns 0 and *out (owned by the caller, release with cn_tel_destroy), or
 * -EINVAL, -ENOMEM, -ENODEV (EAL not initialised) or a ring error.
 */
int cn_tel_create(const struct cn_tel_cfg *cfg, struct cn_tel **out)
{
	const char *name;
	char rname[RTE_RING_NAMESIZE];
	unsigned size, tsize;
	struct cn_tel *t;
	struct cn_tel_priv *p;
	int ret;

	if (cfg == NULL || out == NULL || cfg->ncores == 0 || cfg->ncores > CN_MAX_CORES)
		return -EINVAL;
	size = cfg->ring_size != 0 ? cfg->ring_size : CN_TEL_RING_DEFAULT;
	if (size < 64 || (size & (size - 1)) != 0)
		return -EINVAL;
	tsize = cfg->trace_ring_size;
	if (tsize != 0 && (tsize < 64 || tsize > TRACE_RING_MAX || (tsize & (tsize - 1)) != 0))
		return -EINVAL;
	name = cfg->name != NULL ? cfg->name : "cn";
	if ((size_t)snprintf(rname, sizeof(rname), "%s_tel%u", name, cfg->ncores - 1) >=
	    sizeof(rname))
		return -ENAMETOOLONG;

	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	t->ncores = cfg->ncores;
	t->core = aligned_alloc(CN_CACHE_LINE, sizeof(t->core[0]) * cfg->ncores);
	if (t->core == NULL) {
		ret = -ENOMEM;
		goto free_tel;
	}
	memset(t->core, 0, sizeof(t->core[0]) * cfg->ncores);
	p = aligned_alloc(CN_CACHE_LINE, sizeof(*p));
	if (p == NULL) {
		ret = -ENOMEM;
		goto free_core;
	}
	memset(p, 0, sizeof(*p));
	t->priv = p;
	ret = -pthread_mutex_init(&p->lock, NULL);
	if (ret < 0)
		goto free_priv;
	p->hz = rte_get_tsc_hz();
	p->log.period_tsc = p->hz * TEL_LOG_PERIOD_S;
	for (unsigned i = 0; i < CN_TEL_OP_MAX; i++)
		cn_hist_reset(&p->hist[i]);
	if (!cfg->enabled && tsize == 0) {
		*out = t;
		return 0;
	}

	if (p->hz == 0) {
		ret = -ENODEV;
		goto destroy_lock;
	}
	if (cfg->enabled) {
		ret = cn_tel_pairer_create(TEL_PAIRER_CAP, p->hz * TEL_EXPIRE_S, &p->pairer);
		if (ret < 0)
			goto destroy_lock;
		p->next_expire_tsc = rte_rdtsc() + p->hz;
		for (unsigned c = 0; c < cfg->ncores; c++) {
			snprintf(rname, sizeof(rname), "%s_tel%u", name, c);
			t->core[c].ring = rte_ring_create_elem(rname, sizeof(struct cn_tel_event),
							       size, cfg->socket_id,
							       RING_F_SP_ENQ | RING_F_SC_DEQ |
								       RING_F_EXACT_SZ);
			if (t->core[c].ring == NULL) {
				ret = rte_errno > 0 ? -rte_errno : -ENOMEM;
				goto free_rings;
			}
		}
		p->ring_size = size;
		p->sub[p->nsub++] = (struct tel_sub){.ops = &log_ops, .arg = &p->log};
	}
	if (tsize != 0) {
		ret = create_trace_rings(t, cfg, name);
		if (ret < 0)
			goto free_rings;
	}
	t->enabled = cfg->enabled;
	t->tracing = tsize != 0;
	*out = t;
	return 0;

free_rings:
	free_rings(t);
	free(p->tbuf);
	cn_tel_pairer_destroy(&p->pairer);
destroy_lock:
	pthread_mutex_destroy(&p->lock);
free_priv:
	free(p);
free_core:
	free(t->core);
free_tel:
	free(t);
	return ret;
}

int cn_tel_trace_attach(struct cn_tel *t, struct cn_trace_writer *w)
{
	if (t == NULL || w == NULL || !t->tracing)
		return -EINVAL;
	if (t->priv->state != TEL_CREATED || t->priv->tw != NULL)
		return -EBUSY;
	t->priv->tw = w;
	return 0;
}

/*
 * Before cn_tel_start(). On success @arg belongs to telemetry until
 * ops->close(arg) (at cn_tel_stop or cn_tel_destroy); on error (-EINVAL,
 * -EBUSY once started, -ENOSPC past TEL_MAX_SUBS) the caller keeps it.
 * Works with telemetry disabled too: the subscriber then sees nothing but
 * close().
 */
int cn_tel_subscribe(struct cn_tel *t, const struct cn_tel_sub_ops *ops, void *arg)
{
	struct cn_tel_priv *p;

	if (t == NULL || ops == NULL)
		return -EINVAL;
	p = t->priv;
	if (p->state != TEL_CREATED)
		return -EBUSY;
	if (p->nsub >= TEL_MAX_SUBS)
		return -ENOSPC;
	p->sub[p->nsub++] = (struct tel_sub){.ops = ops, .arg = arg};
	return 0;
}

/*
 * Once only: -EBUSY after a start or a stop. Disabled telemetry without trace
 * rings starts no thread.
 */
int cn_tel_start(struct cn_tel *t)
{
	struct cn_tel_priv *p;
	int ret;

	if (t == NULL)
		return -EINVAL;
	p = t->priv;
	if (p->state != TEL_CREATED)
		return -EBUSY;
	if (t->tracing && p->tw == NULL)
		return -EINVAL;
	if (t->enabled || t->tracing) {
		__atomic_store_n(&p->stop, false, __ATOMIC_RELAXED);
		ret = rte_ctrl_thread_create(&p->thread, "cn-tel-drain", NULL, drain_main, t);
		if (ret != 0)
			return ret < 0 ? ret : -ret;
		p->thread_started = true;
	}
	p->state = TEL_RUNNING;
	return 0;
}

/*
 * Stops the drain thread (if any), then drains once more on the caller's
 * thread, so every event emitted before the call reaches the histograms and
 * the subscribers; STARTs still open then will never end and are counted as
 * spans_unmatched. Closes the subscribers and the trace writer (its END
 * record makes the file complete). Safe to call twice, or without
 * cn_tel_start(). cn_tel_drain_once() still works afterwards (histograms and
 * stats only: no subscriber and no writer remain; trace records are then
 * left in their rings).
 */
void cn_tel_stop(struct cn_tel *t)
{
	struct cn_tel_priv *p;

	if (t == NULL || t->priv->state == TEL_STOPPED)
		return;
	p = t->priv;
	if (p->thread_started) {
		__atomic_store_n(&p->stop, true, __ATOMIC_RELEASE);
		pthread_join(p->thread, NULL);
		p->thread_started = false;
	}
	if (t->enabled || t->tracing) {
		pthread_mutex_lock(&p->lock);
		drain_pass(t);
		if (t->enabled)
			CN_STAT_ADD(&p->st, spans_unmatched,
				    cn_tel_pairer_expire(p->pairer, UINT64_MAX));
		pthread_mutex_unlock(&p->lock);
	}
	pthread_mutex_lock(&p->lock);
	for (unsigned i = 0; i < p->nsub; i++)
		if (p->sub[i].ops->close != NULL)
			p->sub[i].ops->close(p->sub[i].arg);
	p->nsub = 0;
	if (p->tw != NULL) {
		struct cn_trace_writer_stats ws;
		char *path = strdup(cn_trace_writer_path(p->tw));
		int r = cn_trace_writer_close(&p->tw, &ws);

		CN_STAT_SET(&p->st, trace_written, ws.records); /* the last flush's too */
		CN_STAT_SET(&p->st, trace_bytes, ws.bytes);	 /* with the END record */
		CN_STAT_SET(&p->st, trace_errors, ws.errors);
		if (r < 0 && !p->trace_failed)
			RTE_LOG(ERR, USER1, "cachenode: trace %s: %s\n", path ? path : "?",
				strerror(-r));
		free(path);
	}
	p->state = TEL_STOPPED;
	pthread_mutex_unlock(&p->lock);
}

/* Stops if needed (see cn_tel_stop), frees everything, clears *tp. NULL is fine. */
void cn_tel_destroy(struct cn_tel **tp)
{
	struct cn_tel *t;

	if (tp == NULL || *tp == NULL)
		return;
	t = *tp;
	cn_tel_stop(t);
	free_rings(t);
	free(t->priv->tbuf);
	cn_tel_pairer_destroy(&t->priv->pairer);
	pthread_mutex_destroy(&t->priv->lock);
	free(t->priv);
	free(t->core);
	free(t);
	*tp = NULL;
}

/* ---- readers (any thread) ---- */

/* A copy of @op's latency histogram (ns); all zero for a bad op or when disabled. */
void cn_tel_op_hist(const struct cn_tel *t, enum cn_tel_op op, struct cn_hist *out)
{
	if (t == NULL || (unsigned)op >= CN_TEL_OP_MAX) {
		cn_hist_reset(out);
		return;
	}
	cn_hist_snapshot(&t->priv->hist[op], out);
}

void cn_tel_drain_stats(const struct cn_tel *t, struct cn_tel_drain_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (t == NULL)
		return;
#define X(n, ty, h) out->n = CN_STAT_GET(&t->priv->st, n);
	CN_TEL_DRAIN_METRICS(X)
#undef X
}

/* Events waiting in @core's ring (0 when disabled or out of range). */
unsigned cn_tel_ring_depth(const struct cn_tel *t, unsigned core)
{
	if (t == NULL || !t->enabled || core >= t->ncores)
		return 0;
	return rte_ring_count(t->core[core].ring);
}

/* Events each ring holds before it drops (0 when disabled). */
unsigned cn_tel_ring_size(const struct cn_tel *t)
{
	if (t == NULL || !t->enabled)
		return 0;
	return t->priv->ring_size;
}

unsigned cn_tel_trace_depth(const struct cn_tel *t, unsigned core)
{
	if (t == NULL || !t->tracing || core >= t->ncores)
		return 0;
	return rte_ring_count(t->core[core].trace);
}

uint64_t cn_tel_tsc_hz(void)
{
	return rte_get_tsc_hz();
}
