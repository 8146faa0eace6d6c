/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transports: one ops table, several backends (tcp, verbs, loopback).
 *
 * A transport moves bytes; it knows nothing of frames or of the engine. On the
 * server side it drives a *session* (struct cn_session_ops, implemented by the
 * node's protocol state machine) through a sans-I/O interface: the session
 * says where the next received bytes must land (its header buffer, or straight
 * into a reserved L1 slab) and which bytes to send next (iovecs that may point
 * into pinned slabs), and the transport does the I/O. On the client side it
 * offers blocking connect / sendv / recv used by the client library.
 *
 * The transport library depends on no DPDK and no other module of ours but
 * the wire protocol helpers, so the client library can link it alone.
 */
#ifndef CN_TRANSPORT_H
#define CN_TRANSPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cn_metrics.h"

struct cn_server;
struct cn_tconn;

/* open() flags: what the transport can do besides moving bytes. */
#define CN_SESS_RDMA 0x1u /* it runs the session's RDMA operations (verbs) */

/*
 * One RDMA operation a session asks its transport to run (verbs only). The
 * local side always lies inside the server's rdma_region (the L1 pool); the
 * remote side is what the peer named in its request.
 */
struct cn_rdma_op {
	bool read;	      /* READ remote -> local (STORE), else WRITE local -> remote (RETRIEVE) */
	void *local;
	uint32_t len;	      /* 1..max RDMA message size */
	uint32_t rkey;
	uint64_t remote_addr;
};

/*
 * Async completions: how work that runs on another thread (an L2 fetch on a
 * control-plane thread) gets back to the connection's worker.
 *
 * open() hands the session a wake handle. When the async work is done, the
 * thread that did it calls wake.post(wake.worker, job): thread safe, never
 * blocks (the transport pushes the job onto the worker's MPSC completion
 * queue and writes the worker's eventfd). The worker pops it and calls the
 * session module's async_done(job) on its own thread, then services the
 * connection named by job->conn (flush, epoll interest) as after a read.
 *
 * Lifetime: a job is dereferenced only on the worker that owns the session
 * (after the pop), never by the transport except for the link. A session
 * closed with jobs outstanding marks them orphaned; async_done() of an
 * orphaned job frees it and returns 0, and the transport then does not
 * touch job->conn (the connection may be gone). Jobs still queued when the
 * server is destroyed are passed to async_done() then (all orphaned by
 * then), so nothing leaks. The thread doing the work must hand every job
 * back, also on failure and on shutdown.
 */
struct cn_async {
	struct cn_async *next; /* the transport's queue link */
	void *conn;	       /* wake.conn of the session that made it */
	unsigned kind;	       /* the submitter's: tells its kinds of job apart (0 = L2) */
};

struct cn_wake {
	void (*post)(void *worker, struct cn_async *job); /* any thread */
	void *worker;
	void *conn;
};

/*
 * How the transports implement wake.post: each worker has a completion
 * stack @top and an eventfd @evfd its event loop waits on.
 *
 * cn_async_push - push @job on @top and wake the worker. Lock free (a CAS
 * loop), from any thread; the eventfd write never blocks (a full counter
 * means a wake-up is already pending, so its failure is ignored).
 * cn_async_take - the worker takes every posted job at once, oldest first.
 */
static inline void cn_async_push(struct cn_async *_Atomic *top, int evfd, struct cn_async *job)
{
	struct cn_async *head = atomic_load_explicit(top, memory_order_relaxed);
	uint64_t one = 1;

	do {
		job->next = head;
	} while (!atomic_compare_exchange_weak_explicit(top, &head, job, memory_order_release,
							memory_order_relaxed));
	if (write(evfd, &one, sizeof(one)) < 0) {
		/* full: the worker will look anyway */
	}
}

static inline struct cn_async *cn_async_take(struct cn_async *_Atomic *top)
{
	struct cn_async *j = atomic_exchange_explicit(top, NULL, memory_order_acquire), *r = NULL;

	while (j != NULL) { /* the stack is newest first: reverse it */
		struct cn_async *next = j->next;

		j->next = r;
		r = j;
		j = next;
	}
	return r;
}

/*
 * The server-side protocol session, one per connection. All calls for one
 * session come from the worker that owns the connection, one at a time.
 */
struct cn_session_ops {
	/*
	 * A connection was accepted on @worker. @peer is "host:port" text;
	 * @flags are CN_SESS_* (what the transport can do for the session).
	 * Returns the session (owned by the session module until close()) or
	 * NULL to refuse the connection (it is closed at once). @wake is the
	 * connection's completion path for async work, valid until close();
	 * NULL when the transport has none (the session then does no async
	 * work: L2 misses are plain misses).
	 */
	void *(*open)(void *arg, unsigned worker, const char *peer, unsigned flags,
		      const struct cn_wake *wake);
	/*
	 * Where the next received bytes go: up to *len bytes at *buf. *len is
	 * never 0 while the session is reading.
	 */
	void (*rx_buf)(void *sess, void **buf, size_t *len);
	/*
	 * @n bytes (1..len) were written at the last rx_buf() place. Returns 0,
	 * or -errno when the peer broke the protocol: the transport then stops
	 * reading, sends what tx_iov() still yields, and closes.
	 */
	int (*rx_done)(void *sess, size_t n);
	/* true while the session wants no input (output backlog, draining). */
	bool (*rx_paused)(void *sess);
	/* Fill up to @max iovecs with pending output; returns the count (0: none). */
	int (*tx_iov)(void *sess, struct iovec *iov, int max);
	/*
	 * @n bytes of what tx_iov() offered were sent. Freeing output may let
	 * the session run requests it had staged, so this can find a protocol
	 * error too: it returns 0 or -errno, with the same meaning as rx_done().
	 */
	int (*tx_done)(void *sess, size_t n);
	/*
	 * The connection is gone (peer closed, I/O error, protocol error after
	 * flushing, or server shutdown). @err is 0 for an orderly close by the
	 * peer, else -errno. The session releases everything it holds (partly
	 * received chunks are aborted, pinned chunks unpinned) and is freed.
	 */
	void (*close)(void *sess, int err);
	/*
	 * true when the session has no request in progress (between frames,
	 * nothing queued to send): the point where a draining server may close
	 * the connection without cutting a request in half.
	 */
	bool (*idle)(void *sess);

	/*
	 * RDMA, for sessions opened with CN_SESS_RDMA (a transport without
	 * RDMA never calls these).
	 *
	 * rdma_next: fill up to @max operations to run now, in the order they
	 * must be posted; returns the count (0: none pending). Each operation
	 * is handed out once. The session keeps the local memory valid (the
	 * slab reserved or pinned) until rdma_done() covers the operation or
	 * close() is called.
	 *
	 * rdma_done: the oldest @n operations handed out and not yet reported
	 * completed successfully (completions come in order). Returns 0 or
	 * -errno like rx_done(). A failed operation is never reported here:
	 * an RDMA error breaks the queue pair, so the transport destroys it
	 * first (nothing more lands in local memory) and then calls close()
	 * with the error; the session discards the partly written chunks.
	 */
	int (*rdma_next)(void *sess, struct cn_rdma_op *ops, int max);
	int (*rdma_done)(void *sess, unsigned n);

	/*
	 * An async job posted through the wake handle, on the owning worker.
	 * Returns 1: the job's session took it (the transport services
	 * job->conn now: flush, interest), 0: the job was orphaned and is freed
	 * (job->conn must not be touched), or -errno: like rx_done() (flush,
	 * then close job->conn).
	 */
	int (*async_done)(struct cn_async *job);
};

/* Per-worker transport counters. */
#define CN_TRANSPORT_METRICS(X)                                                        \
	X(conns_accepted, COUNTER, "connections accepted")                             \
	X(conns_refused, COUNTER, "connections refused (limit or session refused)")    \
	X(conns_closed, COUNTER, "connections closed")                                 \
	X(conns_open, GAUGE, "connections open now")                                   \
	X(conn_errors, COUNTER, "connections ended by an I/O or protocol error")        \
	X(conn_timeouts, COUNTER, "connections cut: mid-request with no progress for the request timeout") \
	X(bytes_rx, COUNTER, "bytes received")                                         \
	X(bytes_tx, COUNTER, "bytes sent")                                             \
	X(rx_calls, COUNTER, "receive system calls that returned data")                \
	X(tx_calls, COUNTER, "send system calls that sent data")                       \
	X(wakeups, COUNTER, "event-loop wake-ups")

struct cn_transport_stats {
	CN_TRANSPORT_METRICS(CN_METRIC_FIELD)
} CN_CACHE_ALIGNED;

extern const struct cn_metric_desc cn_transport_metric_desc[];
extern const unsigned cn_transport_metric_count;

/*
 * Per-worker RDMA counters of the verbs transport (all zero under tcp).
 * Errors are counted by kind, once per failed work request completion.
 */
#define CN_VERBS_METRICS(X)                                                                    \
	X(wr_posted, COUNTER, "work requests posted (RDMA READ/WRITE and SEND)")               \
	X(rdma_reads, COUNTER, "RDMA READs posted (STORE payloads pulled from clients)")     \
	X(rdma_writes, COUNTER, "RDMA WRITEs posted (RETRIEVE payloads pushed to clients)")  \
	X(bytes_read, COUNTER, "bytes moved by completed RDMA READs")                         \
	X(bytes_written, COUNTER, "bytes moved by completed RDMA WRITEs")                     \
	X(sends, COUNTER, "control messages sent")                                             \
	X(recvs, COUNTER, "control messages received")                                         \
	X(completions, COUNTER, "work completions polled")                                     \
	X(cq_waits, COUNTER, "times the worker armed its CQs and slept")                      \
	X(err_remote_access, COUNTER, "remote access errors (bad rkey, address or length)")  \
	X(err_timeout, COUNTER, "transport or RNR retries exhausted (peer unreachable)")       \
	X(err_flush, COUNTER, "operations flushed by a queue pair in the error state")         \
	X(err_other, COUNTER, "other work completion errors")                                  \
	X(qp_errors, COUNTER, "queue pairs that went to the error state")                      \
	X(disconnects, COUNTER, "connections ended by the peer (CM disconnect)")               \
	X(accept_errors, COUNTER, "connection requests that could not be accepted")

struct cn_verbs_stats {
	CN_VERBS_METRICS(CN_METRIC_FIELD)
} CN_CACHE_ALIGNED;

extern const struct cn_metric_desc cn_verbs_metric_desc[];
extern const unsigned cn_verbs_metric_count;

struct cn_server_cfg {
	const char *listen;	      /* "HOST:PORT"; port 0 picks a free port */
	unsigned nworkers;	      /* 1..CN_MAX_CORES-1; each runs server_run() */
	unsigned max_conns;	      /* per worker; 0 = 4096 */
	unsigned request_timeout_ms;  /* a request with no I/O progress this long is cut; 0 = 30000 */
	const struct cn_session_ops *sess;
	void *sess_arg;		      /* passed to sess->open() */
	struct cn_transport_stats *stats; /* nworkers structs, owned by the caller */
	/* verbs only (others ignore these) */
	const char *rdma_dev;	      /* device name; NULL = the one the listen address is on */
	void *rdma_region;	      /* the only local memory RDMA may touch (the L1 pool); */
	size_t rdma_region_len;	      /*   registered once by server_create() */
	struct cn_verbs_stats *verbs_stats; /* nworkers structs, owned by the caller */
};

struct cn_connect_cfg {
	const char *addr;   /* "HOST:PORT" (tcp) */
	int timeout_ms;	    /* connect and each blocking I/O; <= 0 = no limit */
	struct cn_server *server; /* loopback only: the in-process server to join */
	const char *rdma_dev;	  /* verbs only: the device the route must use; NULL = any */
};

#define CN_SEND_MORE 0x1u /* sendv(): may hold small frames until the next recv() */

struct cn_transport_ops {
	const char *name;

	/* ---- server ---- */
	/* Bind and listen. *out is owned by the caller (server_destroy()). */
	int (*server_create)(const struct cn_server_cfg *cfg, struct cn_server **out);
	/* The bound address as "HOST:PORT" (useful after port 0). */
	const char *(*server_addr)(const struct cn_server *srv);
	/*
	 * Run worker @worker's event loop on the calling thread until
	 * server_stop(). It blocks when idle (no busy polling). Returns 0 after
	 * a stop, -errno on a fatal error.
	 */
	int (*server_run)(struct cn_server *srv, unsigned worker);
	/*
	 * Ask every worker to stop: listeners close at once, each connection is
	 * closed as soon as its session is idle (or after @grace_ms), then
	 * server_run() returns. Async-signal-unsafe but thread safe.
	 */
	void (*server_stop)(struct cn_server *srv, int grace_ms);
	/* Free everything; server_run() must have returned on every worker. */
	void (*server_destroy)(struct cn_server **srv);
	/*
	 * RDMA transports only (NULL elsewhere): the device the server listens
	 * on into @dev and the port GID of its address into @gid ("" where
	 * unknown, e.g. a wildcard address). For the registry record.
	 */
	void (*server_rdma_ident)(const struct cn_server *srv, char *dev, size_t devlen, char *gid,
				  size_t gidlen);

	/* ---- client ---- */
	/* Connect. *out is owned by the caller (close()). */
	int (*connect)(const struct cn_connect_cfg *cfg, struct cn_tconn **out);
	/*
	 * Send every byte of @iov or fail: 0 or -errno (-ETIMEDOUT,
	 * -ECONNRESET). With CN_SEND_MORE the caller says more is coming and
	 * it will recv() before it waits on anything else: a small frame may
	 * then be held back and sent with the next one, or at the latest when
	 * recv() is called, saving system calls on pipelined requests.
	 */
	int (*sendv)(struct cn_tconn *c, const struct iovec *iov, int iovcnt, unsigned flags);
	/* Receive exactly @len bytes: 0, -ECONNRESET (closed early), -ETIMEDOUT. */
	int (*recv)(struct cn_tconn *c, void *buf, size_t len);
	/* Close and free; *c becomes NULL; accepts NULL. */
	void (*close)(struct cn_tconn **c);

	/* ---- client, RDMA transports only (NULL elsewhere) ---- */
	/*
	 * Register [addr, addr + len) so the node may RDMA READ and WRITE it.
	 * *handle is for mem_dereg(); *rkey goes into CN_F_RDMA descriptors.
	 * Returns 0, -ENOMEM (locked-memory limit), or another -errno.
	 */
	int (*mem_reg)(struct cn_tconn *c, void *addr, size_t len, void **handle, uint32_t *rkey);
	/*
	 * The same for device memory exported as a dma-buf (@fd, @offset), that
	 * requests name as [iova, iova + len). The caller keeps and closes @fd.
	 * -EOPNOTSUPP (or the device's -errno) when the NIC cannot.
	 */
	int (*mem_reg_dmabuf)(struct cn_tconn *c, int fd, uint64_t offset, size_t len, void *iova,
			      void **handle, uint32_t *rkey);
	/* Deregister; no request may still name the memory. Accepts NULL. */
	void (*mem_dereg)(struct cn_tconn *c, void *handle);
};

extern const struct cn_transport_ops cn_tcp_ops;
extern const struct cn_transport_ops cn_loopback_ops;
#ifdef CN_HAVE_VERBS
extern const struct cn_transport_ops cn_verbs_ops;
#endif

/*
 * The ops table for "tcp" / "verbs" / "loopback"; NULL for an unknown name
 * (and for "verbs" in a build without libibverbs). NULL name = tcp.
 */
const struct cn_transport_ops *cn_transport_find(const char *name);

/*
 * cn_parse_hostport - split "HOST:PORT" / "[V6]:PORT" into @host (size
 * @hostlen) and *port. Returns 0 or -EINVAL.
 */
int cn_parse_hostport(const char *addr, char *host, size_t hostlen, uint16_t *port);

/*
 * cn_transport_pick - resolve a transport choice: "tcp", "verbs" or "auto"
 * (NULL = "auto"). auto means verbs when this build has it and an RDMA
 * device (@rdma_dev, or any when NULL) is usable, else tcp.
 * Returns the ops table, or NULL with the reason in @why (unknown name,
 * verbs asked for but not built in or no usable device). @why also says, for
 * auto, why tcp was chosen ("" when verbs was).
 */
const struct cn_transport_ops *cn_transport_pick(const char *choice, const char *rdma_dev,
						 char *why, size_t whylen);

#endif /* CN_TRANSPORT_H */
