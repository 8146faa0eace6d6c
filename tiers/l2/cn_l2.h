/* SPDX-License-Identifier: Apache-2.0 */
/*
 * L2 tier: the other nodes' L1, reached over the cachenode protocol.
 *
 * Pieces:
 *   - a peer *source* (struct cn_l2_source_ops) says which nodes are live:
 *     {node id, address, transport}. The static source is the --peer list;
 *     the Redis registry plugs in as a second source (cn_reg_peers()
 *     snapshots) without touching the rest. cn_l2_refresh() takes a new
 *     snapshot: peers that appear join the placement set, peers that vanish
 *     leave it (their slot is kept, marked not a member, so a reader never
 *     sees a freed peer);
 *   - placement: rendezvous (highest random weight) hashing of the 32-byte
 *     key over the member nodes: owner(key) = the node with the highest
 *     score(key, node id), score = a 64-bit mix of the key's bytes seeded by
 *     a hash of the id. When a node joins, only the keys it now wins move
 *     (about 1/n); when one leaves, only its keys move. The members are the
 *     nodes the source lists; this node is one when the source lists its id
 *     (the registry always does; give every node the same --peer list). A
 *     node the source does not list owns no key: it caches what passes
 *     through it and writes every store through to the key's owner;
 *   - health: a peer whose request times out or fails is marked *down* for a
 *     back-off (1 s, doubling per consecutive failure up to 30 s). While down,
 *     its keys are answered as misses at once, without a request; the first
 *     request after the back-off is the probe;
 *   - a small pool of control-plane threads (not worker lcores) runs the
 *     jobs: RETRIEVE / LOOKUP batches to owners, and write-through STOREs.
 *     Each thread keeps one libcachenode client per peer, connected lazily,
 *     with --l2-timeout on connect and every I/O. A finished job is handed
 *     back to the worker that submitted it through the job's wake handle
 *     (struct cn_wake, cn_transport.h): the worker never waits on a peer.
 *
 * Peer sessions: the node's clients send HELLO with the name
 * CN_L2_PEER_NAME_PREFIX "<node id>", and a session that received it serves
 * from L1 only (no L2 lookups, fetches or write-through), so requests
 * between peers never recurse.
 *
 * Threads: cn_l2_owner(), cn_l2_peer_down() and cn_l2_submit() are safe from
 * any thread; per-peer counters are written by the pool threads (atomic
 * adds: control-plane rate, not the data path) and the submitting workers,
 * and read by any thread.
 */
#ifndef CN_L2_H
#define CN_L2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cachenode/proto.h>
#include "cn_metrics.h"
#include "cn_transport.h"

#define CN_L2_MAX_PEERS	       64u
#define CN_L2_PEER_NAME_PREFIX CN_PROTO_PEER_PREFIX
#define CN_L2_SELF	       0xffffu /* cn_l2_owner(): this node owns the key */

/* Per-peer counters (summed over nothing: one struct per peer). */
#define CN_L2_PEER_METRICS(X)                                                                   \
	X(fetch_reqs, COUNTER, "RETRIEVE requests sent to the peer for L1 misses")              \
	X(fetch_keys, COUNTER, "keys asked for in those requests")                              \
	X(fetch_hits, COUNTER, "chunks the peer returned")                                      \
	X(fetch_bytes, COUNTER, "bytes of chunks the peer returned")                            \
	X(lookup_reqs, COUNTER, "LOOKUP requests sent to the peer")                             \
	X(lookup_keys, COUNTER, "keys asked for in those LOOKUPs")                              \
	X(lookup_hits, COUNTER, "keys the peer reported present")                               \
	X(put_reqs, COUNTER, "write-through STOREs sent to the peer")                           \
	X(put_bytes, COUNTER, "bytes of those STOREs")                                          \
	X(errors, COUNTER, "requests that failed (connection refused or lost, protocol error)") \
	X(timeouts, COUNTER, "requests that timed out (--l2-timeout)")                          \
	X(down_skips, COUNTER, "keys answered as misses (or copies skipped) while it was down") \
	X(marked_down, COUNTER, "times the peer was marked down")                               \
	X(connects, COUNTER, "connections opened to the peer")

struct cn_l2_peer_stats {
	CN_L2_PEER_METRICS(CN_METRIC_FIELD)
};

extern const struct cn_metric_desc cn_l2_peer_metric_desc[];
extern const unsigned cn_l2_peer_metric_count;

/* Node-wide L2 counters. */
#define CN_L2_METRICS(X)                                                                        \
	X(jobs_submitted, COUNTER, "jobs handed to the L2 threads (fetch, lookup, put)")         \
	X(jobs_done, COUNTER, "jobs the L2 threads finished and handed back")                    \
	X(queue_full, COUNTER, "fetch/lookup jobs refused because the queue was full (misses)") \
	X(put_dropped, COUNTER, "write-through copies dropped (queue full, no wake path)")       \
	X(fills, COUNTER, "chunks fetched from peers and stored into L1")                        \
	X(fill_failed, COUNTER, "fetched chunks that could not be stored into L1")               \
	X(queue_depth, GAUGE, "jobs waiting for an L2 thread")

struct cn_l2_stats {
	CN_L2_METRICS(CN_METRIC_FIELD)
};

extern const struct cn_metric_desc cn_l2_metric_desc[];
extern const unsigned cn_l2_metric_count;

/* One live node as a source reports it. */
struct cn_l2_peer_info {
	char id[CN_PROTO_MAX_NAME + 1];
	char addr[128];	     /* "HOST:PORT" */
	char transport[16];  /* "tcp", "verbs" or "auto" ("" = tcp): how the L2 threads connect */
};

/*
 * Where the peers come from. snapshot() fills up to @max live nodes (this
 * node may be among them: it is recognised by its id) and returns the
 * count, or -errno (the previous set is then kept). Called from the control
 * plane only (cn_l2_create(), cn_l2_refresh()).
 */
struct cn_l2_source_ops {
	const char *name; /* "static", "registry" */
	int (*snapshot)(void *arg, struct cn_l2_peer_info *out, unsigned max);
};

/*
 * The static source: @spec is a comma-separated "ID@HOST:PORT[/TRANSPORT]"
 * list (the --peer values); TRANSPORT is tcp (the default), verbs or auto,
 * as cn_client_opts.transport takes it. cn_l2_static_parse() validates and
 * splits it (0 or -EINVAL with the offending entry in @err; an unknown
 * transport is named); the source's arg is a struct cn_l2_static filled by
 * it.
 */
struct cn_l2_static {
	unsigned n;
	struct cn_l2_peer_info peers[CN_L2_MAX_PEERS];
};
int cn_l2_static_parse(const char *spec, struct cn_l2_static *out, char *err, size_t errlen);
extern const struct cn_l2_source_ops cn_l2_static_source;

enum cn_l2_write { CN_L2_WRITE_THROUGH, CN_L2_WRITE_NONE };

struct cn_l2_cfg {
	const char *self_id;	/* this node's id (its name in the placement set) */
	const struct cn_l2_source_ops *source;
	void *source_arg;	/* not owned; must outlive the tier */
	unsigned timeout_ms;	/* connect and each I/O with a peer */
	unsigned threads;	/* pool size; 0 = 2 */
	unsigned queue_max;	/* jobs waiting; 0 = 1024 */
	enum cn_l2_write write;
	uint64_t max_chunk;	/* largest chunk a fetch accepts */
	/*
	 * Room per key of a fetch's first RETRIEVE; a larger chunk comes back
	 * CN_E_TOOBIG with its length and is fetched again at its size (a second
	 * request for all such keys). 0 = max_chunk over tcp (the pages of an
	 * unwritten malloc cost nothing) and CN_L2_RDMA_FETCH_CAP over RDMA
	 * transports, where every receive buffer is registered, hence pinned.
	 */
	uint32_t fetch_cap;
};

#define CN_L2_RDMA_FETCH_CAP (1u << 20)

struct cn_l2;

/* Job kinds. */
enum cn_l2_op {
	CN_L2_FETCH,  /* RETRIEVE items from their owners into malloc'd buffers */
	CN_L2_LOOKUP, /* LOOKUP items at their owners */
	CN_L2_PUT,    /* STORE items (bytes at data, len) to their owners */
};

struct cn_l2_item {
	struct cn_key key;
	uint16_t peer;	/* owner (cn_l2_owner()), set by the submitter */
	int32_t status; /* out: CN_OK, CN_E_NOENT (miss, peer down or failed), ... */
	/*
	 * FETCH: out, a malloc'd copy of the chunk (owned by the job's submitter
	 * once the job is handed back: free() it). PUT: in, the bytes to send
	 * (the submitter keeps them valid until the job is handed back).
	 */
	void *data;
	uint32_t len;
	bool present;	/* LOOKUP out: the owner has it */
	uint32_t idx;	/* the submitter's (its position in the request) */
};

/*
 * One unit of async work. The submitter fills op, wake, items (peer set by
 * cn_l2_owner()), and the fields it owns; the pool runs it and hands it back
 * with wake.post(wake.worker, &job->async) (in cn_transport.h terms: the
 * transport's worker then calls the session's async_done()). Between submit
 * and hand-back only the pool touches op/items; the owner's fields (sess,
 * orphaned, links, user) are only read or written on the submitting worker.
 */
struct cn_l2_job {
	struct cn_async async;	/* the transport's link; must be first */
	struct cn_wake wake;
	enum cn_l2_op op;
	/* the submitter's (the session's), never touched by the pool */
	void *sess;
	bool orphaned;
	struct cn_l2_job *sprev, *snext;
	void *ctx;
	void *user;
	unsigned core;
	uint64_t sid;	   /* telemetry span */
	uint64_t req_id;   /* the request it answers */
	uint8_t req_op;
	uint16_t req_flags; /* that request's CN_F_* flags (CN_F_RDMA: an RDMA RETRIEVE's fetch) */
	/* the work */
	uint32_t n;
	struct cn_l2_item it[];
};

/*
 * cn_l2_create - take the source's first snapshot and start the pool.
 * Returns 0 and *out (owned by the caller: cn_l2_destroy()), -EINVAL for a
 * bad config, or -errno (threads, memory, the source's error).
 */
int cn_l2_create(const struct cn_l2_cfg *cfg, struct cn_l2 **out);

/*
 * cn_l2_stop - stop the pool: jobs still queued are handed back with every
 * item a miss, the threads are joined (a job in progress finishes first,
 * bounded by the timeout). Call before the transport's server is destroyed,
 * after its workers stopped. Idempotent.
 */
void cn_l2_stop(struct cn_l2 *l2);

/* cn_l2_destroy - stop and free; *l2 becomes NULL; accepts NULL. */
void cn_l2_destroy(struct cn_l2 **l2);

/* cn_l2_refresh - take a new snapshot from the source. 0 or its -errno. */
int cn_l2_refresh(struct cn_l2 *l2);

/* true when the source lists this node (it owns keys). */
bool cn_l2_self_member(const struct cn_l2 *l2);

/* true when there is at least one member peer besides this node. */
bool cn_l2_active(const struct cn_l2 *l2);
enum cn_l2_write cn_l2_write_mode(const struct cn_l2 *l2);

/*
 * cn_l2_owner - the key's owner among the members: a peer index, or
 * CN_L2_SELF (never when this node is not a member, unless there is no
 * member peer at all).
 */
uint16_t cn_l2_owner(const struct cn_l2 *l2, const struct cn_key *key);

/* cn_l2_peer_down - true while peer @i is in its back-off. */
bool cn_l2_peer_down(const struct cn_l2 *l2, uint16_t i);

/*
 * cn_l2_job_alloc - a zeroed job with room for @n items (malloc; free()
 * it). NULL when out of memory.
 */
struct cn_l2_job *cn_l2_job_alloc(uint32_t n);

/*
 * cn_l2_submit - queue @job for the pool. Returns 0 (the job belongs to the
 * pool until it is handed back through job->wake), or -EAGAIN (queue full;
 * counted as queue_full or put_dropped) / -ESHUTDOWN (stopped): the job is
 * still the caller's.
 */
int cn_l2_submit(struct cn_l2 *l2, struct cn_l2_job *job);

/*
 * cn_l2_peer_skip - @n keys of peer @i answered as misses (or copies not
 * made) by the submitter because the peer is down; counted in down_skips.
 */
void cn_l2_peer_skip(struct cn_l2 *l2, uint16_t i, uint64_t n);

/* Counting from the submitter (workers): fills, fill_failed, put_dropped. */
void cn_l2_count(struct cn_l2 *l2, unsigned metric_offset, uint64_t v);
#define CN_L2_COUNT(l2, field, v) \
	cn_l2_count(l2, (unsigned)(offsetof(struct cn_l2_stats, field) / sizeof(uint64_t)), v)

/* ---- reading (exporters, any thread) ---- */

struct cn_l2_peer_view {
	struct cn_l2_peer_info info;
	bool member;		 /* in the placement set now */
	bool down;		 /* in back-off */
	uint64_t down_ms_left;	 /* back-off left */
	unsigned fails;		 /* consecutive failures */
	char last_error[192];
	struct cn_l2_peer_stats st;
};

unsigned cn_l2_npeers(const struct cn_l2 *l2);
/* Peer @i (< cn_l2_npeers()); 0 or -ENOENT. */
int cn_l2_peer_get(const struct cn_l2 *l2, unsigned i, struct cn_l2_peer_view *v);
void cn_l2_get_stats(const struct cn_l2 *l2, struct cn_l2_stats *out);
const char *cn_l2_source_name(const struct cn_l2 *l2);
unsigned cn_l2_timeout_ms(const struct cn_l2 *l2);

/*
 * cn_l2_rendezvous - the placement function on its own (unit tests):
 * among @n ids, the index of @key's owner (highest score; ties go to the
 * smaller id). n must be > 0.
 */
unsigned cn_l2_rendezvous(const struct cn_key *key, const char *const *ids, unsigned n);

#endif /* CN_L2_H */
