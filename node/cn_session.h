/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The node's protocol session: a sans-I/O state machine, one per connection,
 * that turns request frames into engine operations and replies. A transport
 * drives it through struct cn_session_ops (cn_transport.h); it never does I/O
 * itself, so TCP, loopback and later RDMA run the same request logic.
 *
 * Request handling, in short (docs/protocol.md has the full rules):
 *   - a header that fails its checks (magic, checksum, version, reserved,
 *     length over the hard cap, a reply flag) is fatal: an ERROR frame with
 *     CN_F_CLOSE is queued and the connection closes after it is sent;
 *   - a request that is well framed but wrong (unknown opcode, bad count,
 *     duplicate keys, zero-length or oversize chunk) gets an error reply with
 *     the request's opcode; its remaining payload is skipped and the
 *     connection keeps serving;
 *   - STORE payloads are received straight into reserved L1 slabs; the
 *     chunks of a batch are committed together once the batch's last byte
 *     has arrived, and every reserved chunk is aborted (never visible) if
 *     the connection ends first;
 *   - RETRIEVE replies are sent straight from pinned slabs, unpinned once the
 *     last byte has left;
 *   - STORE/RETRIEVE with CN_F_RDMA are served only on sessions opened with
 *     CN_SESS_RDMA (else, and on any other opcode, a request-level
 *     CN_E_INVAL): the session reserves or pins the slabs and hands the
 *     transport one RDMA READ (STORE) or WRITE (RETRIEVE) per slab through
 *     rdma_next(); when rdma_done() has covered a request's operations it
 *     commits that request's chunks together (STORE) or unpins them
 *     (RETRIEVE) and its reply may leave. If the connection closes first,
 *     the reserved chunks are aborted (never visible) and the pinned ones
 *     unpinned;
 *   - consecutive CN_F_RDMA requests are pipelined: while some are in
 *     flight the session keeps parsing and starts the next one at once,
 *     unless it shares a key with an in-flight request where either of the
 *     two is a STORE (it waits until those finished), or the bounds below
 *     are reached. Any other request is a barrier: it is parsed and run
 *     only once no RDMA request is in flight. Replies always leave in
 *     request order (a finished request's reply waits behind earlier ones);
 *   - with an L2 tier, a RETRIEVE (inline or CN_F_RDMA) whose keys miss in
 *     L1 and are owned by an up peer waits while the L2 threads fetch them
 *     into L1, then is served from L1; the session reads nothing past it
 *     meanwhile (earlier RDMA requests go on). A key the peer cannot give
 *     is a miss, never an error;
 *   - STORE/RETRIEVE with CN_F_GPU name chunks in GPU regions the connection
 *     registered (GPU_REGISTER: a CUDA IPC handle the GPU tier maps). The
 *     session reserves or pins the slabs, hands the GPU tier one copy batch
 *     per region, and finishes the request (commit / unpin, reply) when the
 *     tier's completions come back through the wake path. Such a request is
 *     a barrier like any non-RDMA one; while it runs nothing more is parsed.
 *     Without a usable GPU every GPU request is answered CN_E_NODEV with the
 *     tier's reason and the connection keeps serving.
 */
#ifndef CN_SESSION_H
#define CN_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "cn_engine.h"
#include "cn_gpu.h"
#include "cn_l2.h"
#include "cn_metrics.h"
#include "cn_transport.h"

#define CN_SESSION_METRICS(X)                                                              \
	X(frames_rx, COUNTER, "request frames received")                                   \
	X(frames_bad, COUNTER, "malformed frames (error frame sent, connection closed)")  \
	X(req_errors, COUNTER, "requests answered with a request-level error")            \
	X(hello_reqs, COUNTER, "HELLO requests")                                           \
	X(ping_reqs, COUNTER, "PING requests")                                             \
	X(status_reqs, COUNTER, "STATUS requests")                                         \
	X(lookup_reqs, COUNTER, "LOOKUP requests")                                         \
	X(lookup_keys, COUNTER, "keys asked for in LOOKUP requests")                       \
	X(lookup_prefix_keys, COUNTER, "keys found in LOOKUP prefixes")                    \
	X(store_reqs, COUNTER, "STORE requests")                                           \
	X(store_keys, COUNTER, "chunks offered in STORE requests")                         \
	X(store_ok, COUNTER, "chunks stored")                                              \
	X(store_bytes, COUNTER, "payload bytes of chunks stored")                          \
	X(store_failed, COUNTER, "chunks refused (no space, already present)")             \
	X(store_discarded, COUNTER, "partly received chunks discarded (peer vanished)")   \
	X(retrieve_reqs, COUNTER, "RETRIEVE requests")                                     \
	X(retrieve_keys, COUNTER, "chunks asked for in RETRIEVE requests")                 \
	X(retrieve_hits, COUNTER, "chunks found and sent")                                 \
	X(retrieve_bytes, COUNTER, "payload bytes sent for RETRIEVE")                     \
	X(delete_reqs, COUNTER, "DELETE requests")                                         \
	X(prefetch_reqs, COUNTER, "PREFETCH requests")                                     \
	X(prefetch_keys, COUNTER, "keys asked for in PREFETCH requests")                   \
	X(prefetch_l1_keys, COUNTER, "PREFETCH keys that were in L1 already")              \
	X(prefetch_l2_keys, COUNTER, "PREFETCH keys fetched from their owner peer into L1") \
	X(delete_keys, COUNTER, "keys deleted")                                            \
	X(rdma_store_reqs, COUNTER, "STORE requests with CN_F_RDMA (payloads RDMA-read)")   \
	X(rdma_retrieve_reqs, COUNTER, "RETRIEVE requests with CN_F_RDMA (payloads RDMA-written)") \
	X(rdma_aborted, COUNTER, "CN_F_RDMA requests cut by the connection's end mid-RDMA") \
	X(retrieve_l2_hits, COUNTER, "chunks missing in L1 fetched from their owner peer and sent") \
	X(lookup_l2_keys, COUNTER, "keys of LOOKUP prefixes found on peers (tier L2)")     \
	X(l2_waits, COUNTER, "requests that waited for the L2 tier (fetch or lookup)")    \
	X(l2_puts, COUNTER, "chunks handed to the L2 threads for write-through")          \
	X(peer_sessions, COUNTER, "sessions opened by peer nodes (served from L1 only)") \
	X(gpu_store_reqs, COUNTER, "STORE requests with CN_F_GPU (chunks copied device -> L1)") \
	X(gpu_retrieve_reqs, COUNTER, "RETRIEVE requests with CN_F_GPU (chunks copied L1 -> device)") \
	X(gpu_copy_failed, COUNTER, "chunks of CN_F_GPU requests lost to a failed device copy") \
	X(gpu_nodev, COUNTER, "GPU requests refused: no usable GPU on the node (CN_E_NODEV)") \
	X(gpu_regions, COUNTER, "GPU regions registered (GPU_REGISTER accepted)")         \
	X(sessions_open, GAUGE, "sessions open now")

/*
 * Bounds of RDMA pipelining, per session: at most CN_SESSION_RDMA_MAX_REQS
 * CN_F_RDMA requests in flight (started, operations not all completed),
 * naming at most CN_SESSION_RDMA_MAX_BYTES bytes together (STORE chunk
 * lengths, RETRIEVE caps). A request that would pass either waits, and the
 * session reads nothing more, until earlier ones finish; a request alone is
 * always started, however large. One parsed request may wait beyond them.
 */
#define CN_SESSION_RDMA_MAX_REQS  16u
#define CN_SESSION_RDMA_MAX_BYTES (64ull << 20)

struct cn_session_stats {
	CN_SESSION_METRICS(CN_METRIC_FIELD)
} CN_CACHE_ALIGNED;

extern const struct cn_metric_desc cn_session_metric_desc[];
extern const unsigned cn_session_metric_count;

/*
 * Shared by every session of a node; the node owns it and keeps it alive
 * until the server is destroyed. @stats has one struct per worker.
 */
struct cn_session_ctx {
	struct cn_engine *engine;
	const char *node_id;
	uint32_t max_keys;  /* <= CN_PROTO_MAX_KEYS */
	uint64_t max_frame; /* <= CN_PROTO_MAX_FRAME */
	struct cn_session_stats *stats;
	/* STATUS reply body: a malloc'd JSON text of *len bytes, or NULL. */
	char *(*status_json)(void *arg, size_t *len);
	void *status_arg;
	/* the L2 tier, or NULL: misses stay misses, stores stay local. Not owned. */
	struct cn_l2 *l2;
	/* the GPU tier (present or absent: absent answers CN_E_NODEV), or NULL = absent. Not owned. */
	struct cn_gpu *gpu;
};

/* The ops a transport drives; sess_arg must be a struct cn_session_ctx *. */
extern const struct cn_session_ops cn_session_ops;

#endif /* CN_SESSION_H */
