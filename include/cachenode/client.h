/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libcachenode: the C client library of cachenode.
 *
 * One struct cn_client is one connection to one node. It is not thread safe:
 * use one client per thread (connections are cheap). Every function returns 0
 * (or a count) on success and a negative errno on failure; after a failure
 * cn_client_errmsg() says what happened in words. Errors that the node
 * reported map to errno values through cn_status_to_errno() (proto.h):
 * -ENOENT missing key, -ENOSPC cache full, -E2BIG over a limit, -EINVAL bad
 * request, -EALREADY duplicate key in a batch, -EPROTO malformed frame.
 * Connection-level failures: -ECONNREFUSED, -ECONNRESET (node closed the
 * connection; the client is unusable afterwards and every call returns
 * -ENOTCONN), -ETIMEDOUT.
 *
 * Buffers passed in belong to the caller; the library never keeps a pointer
 * past the call that completes the request.
 */
#ifndef CACHENODE_CLIENT_H
#define CACHENODE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cachenode/proto.h>

#ifdef __cplusplus
extern "C" {
#endif

struct cn_client;

/*
 * Transports (cn_client_opts.transport):
 *   "tcp"   (default, also NULL) a TCP connection.
 *   "verbs" RDMA: requests and replies travel as RDMA SEND messages, and
 *           STORE / RETRIEVE payloads move by one-sided RDMA between the
 *           caller's buffers and the node's memory (no copy on either side).
 *           Fails with -ENODEV when this build has no RDMA support or no
 *           RDMA device (rdma_dev, or any) is usable; the message says which.
 *   "auto"  verbs when an RDMA device is usable and the node accepts the
 *           RDMA connection, else tcp: a verbs connect that is refused,
 *           unreachable or times out falls back to tcp (so a node without
 *           RDMA costs up to one timeout_ms more at connect).
 * cn_client_transport() says which one a client uses. Every call behaves the
 * same over both: same results, status[] values and bufs[].len.
 */
struct cn_client_opts {
	const char *transport; /* "tcp" (default, NULL), "verbs" or "auto" */
	int timeout_ms;	       /* per blocking I/O step; 0 = 10000 */
	const char *name;      /* sent in HELLO; NULL = "libcachenode" */
	const char *rdma_dev;  /* verbs / auto: RDMA device to use (e.g. "mlx5_0"); NULL = any */
};

/* What the node said in its HELLO reply. */
struct cn_node_info {
	uint16_t version;
	uint32_t max_keys;
	uint32_t max_chunk;
	uint64_t max_frame;
	uint64_t l1_capacity;
	char node_id[CN_PROTO_MAX_NAME + 1];
};

/**
 * cn_client_connect - connect to a node and exchange HELLO.
 * @addr: "HOST:PORT" ("[v6addr]:PORT" for IPv6): the node's --listen
 * address, whichever transport it serves (RDMA CM uses the same port number).
 * @opts: NULL for defaults.
 * @out: the new client, owned by the caller (cn_client_close()). On failure
 * other than -ENOMEM, *out is a closed client that only carries the error
 * message (cn_client_errmsg()): close it like any other. On -ENOMEM *out is NULL.
 * Returns 0 or -errno (-EINVAL bad address or unknown transport,
 * -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, -ENODEV transport "verbs" not
 * usable here, -EPROTONOSUPPORT if the node speaks another protocol version).
 */
int cn_client_connect(const char *addr, const struct cn_client_opts *opts, struct cn_client **out);

/**
 * cn_client_close - close the connection and free the client; *c becomes
 * NULL. Accepts NULL and *c == NULL.
 */
void cn_client_close(struct cn_client **c);

/** cn_client_errmsg - the last error in words; "" if none. Owned by @c. */
const char *cn_client_errmsg(const struct cn_client *c);

/** cn_client_node - the node's HELLO information. Owned by @c. */
const struct cn_node_info *cn_client_node(const struct cn_client *c);

/**
 * cn_client_transport - the transport @c is using: "tcp" or "verbs" (after
 * "auto", the one it settled on; "loopback" in the project's own tests), or
 * "none" for a client that never connected. Static storage; never NULL.
 */
const char *cn_client_transport(const struct cn_client *c);

/* ---- memory registration (RDMA) ----
 *
 * Over verbs the node reads STORE payloads from, and writes RETRIEVE chunks
 * into, the caller's buffers directly; that memory must be registered with
 * the RDMA device. A buffer inside a region registered here is the fast
 * path: its registration is looked up, nothing else happens. Any other
 * buffer is registered when its request is submitted and deregistered when
 * it completes or fails, which costs a pinning system call each way (tens of
 * microseconds, more for large buffers): register the buffers you reuse
 * (KV-cache pools, staging buffers) once per client.
 *
 * Over tcp (and every transport without RDMA) both calls return 0 and do
 * nothing, so engines can call them unconditionally.
 */
#define CN_CLIENT_MAX_REGIONS 64

/**
 * cn_client_mem_register - register [addr, addr + len) for RDMA on @c's
 * connection. The memory stays the caller's; it must stay allocated until
 * cn_client_mem_unregister() or cn_client_close(). Registrations belong to
 * the connection: one per client that uses the memory.
 * Returns 0, -EINVAL (NULL @addr, @len 0, or a range that wraps), -EEXIST
 * (overlaps a region already registered on @c), -ENOSPC (already
 * CN_CLIENT_MAX_REGIONS regions), -ENOMEM (the locked-memory limit: see
 * `ulimit -l`), -ENOTCONN (connection closed), or another -errno from the
 * RDMA device. Over tcp: 0, nothing done.
 */
int cn_client_mem_register(struct cn_client *c, void *addr, size_t len);

/**
 * cn_client_mem_unregister - undo cn_client_mem_register(); @addr is the
 * exact start address that was registered. Regions still registered are
 * unregistered by cn_client_close() (and released with the connection when
 * it fails; unregistering them afterwards returns 0).
 * Returns 0, -ENOENT (no region starts at @addr), -EBUSY (an outstanding
 * request uses the region: wait for it first), -EINVAL (NULL @c).
 * Over tcp: 0, nothing done.
 */
int cn_client_mem_unregister(struct cn_client *c, void *addr);

/* ---- synchronous calls ---- */

int cn_client_ping(struct cn_client *c);

/**
 * cn_client_lookup - how many leading keys of @keys are stored.
 * @tiers: NULL, or n entries that receive enum cn_tier per key.
 * Returns 0 and sets *prefix, or -errno.
 */
int cn_client_lookup(struct cn_client *c, const struct cn_key *keys, uint32_t n, uint32_t *prefix,
		     uint8_t *tiers);

/**
 * cn_client_store - store one chunk. Storing a key that is already stored is
 * a success (the stored copy is kept; see docs/protocol.md).
 * Returns 0 or -errno (-ENOSPC, -E2BIG, -EINVAL for len 0).
 */
int cn_client_store(struct cn_client *c, const struct cn_key *key, const void *buf, uint32_t len);

/**
 * cn_client_retrieve - read one chunk into @buf (capacity @cap).
 * Returns 0 and sets *len, -ENOENT if absent, -ENOBUFS if the chunk is larger
 * than @cap (then *len is its size and the connection stays usable).
 */
int cn_client_retrieve(struct cn_client *c, const struct cn_key *key, void *buf, uint32_t cap,
		       uint32_t *len);

/** cn_client_delete - remove one key. Returns 0 or -ENOENT / -errno. */
int cn_client_delete(struct cn_client *c, const struct cn_key *key);

/**
 * cn_client_prefetch - ask the node to bring @n keys into its L1 from the
 * peers that own them (L2), ahead of a RETRIEVE. @status (n entries, may
 * not be NULL) receives CN_OK for each key now in the node's L1 and
 * CN_E_NOENT for keys no tier has. Returns 0 when every key is there, else
 * the -errno of the first that is not (-ENOENT), or a connection error.
 */
int cn_client_prefetch(struct cn_client *c, const struct cn_key *keys, uint32_t n,
		       int32_t *status);

/**
 * cn_client_status - the node's STATUS document (JSON). *json is a
 * NUL-terminated string owned by the caller (free()).
 */
int cn_client_status(struct cn_client *c, char **json);

/* ---- batches and pipelining ----
 *
 * A request describes a whole batch. cn_client_submit() sends it and returns
 * without waiting; cn_client_wait() completes the oldest outstanding request
 * (replies come back in order). Up to CN_CLIENT_MAX_DEPTH requests may be
 * outstanding. The request and every buffer it names must stay valid and
 * untouched until it has completed. Over verbs, STORE and RETRIEVE buffers
 * are used by RDMA (see "memory registration" above); a buffer that is not
 * inside a registered region is registered for the request, and a failure
 * to do so fails the submit (-ENOMEM and the like, nothing sent).
 */
#define CN_CLIENT_MAX_DEPTH 256

struct cn_buf {
	void *data;   /* STORE: bytes to send; RETRIEVE: where the chunk goes (unused: GPU) */
	uint32_t len; /* STORE: in; RETRIEVE: out (the chunk's size) */
	uint32_t cap; /* RETRIEVE: capacity of data */
};

/*
 * Where a chunk of a GPU request lives (cn_req.gpu): a region registered on
 * this connection (cn_client_gpu_register) and the offset in it. The node
 * copies the chunk device -> L1 (STORE, bufs[i].len bytes) or L1 -> device
 * (RETRIEVE, up to bufs[i].cap bytes) on a copy engine and replies once the
 * copies completed: a completed RETRIEVE's bytes are in device memory. A node
 * without a usable GPU fails the request with -ENODEV and its reason
 * (cn_client_errmsg).
 */
struct cn_gpu_loc {
	uint32_t region;
	uint64_t off;
};

struct cn_req {
	uint8_t op;		   /* CN_OP_LOOKUP, _STORE, _RETRIEVE, _DELETE, _PREFETCH, _PING */
	uint32_t nkeys;		   /* 1..max_keys */
	const struct cn_key *keys; /* nkeys keys */
	struct cn_buf *bufs;	   /* STORE / RETRIEVE: nkeys buffers */
	int32_t *status;	   /* STORE / RETRIEVE / DELETE / PREFETCH: nkeys enum cn_status, out */
	uint8_t *tiers;		   /* LOOKUP: NULL or nkeys, out */
	uint32_t prefix;	   /* LOOKUP: out */
	int result;		   /* out: 0, or -errno for the request as a whole */
	void *user;		   /* caller's, untouched */
	uint64_t req_id;	   /* set by submit */
	const struct cn_gpu_loc *gpu; /* STORE / RETRIEVE: NULL, or nkeys places in GPU regions */
};

/**
 * cn_client_submit - validate and send @req. Returns 0 (the request is now
 * outstanding), -EINVAL (bad request, nothing sent), -EBUSY (depth reached),
 * or a connection error. A small request (under 16 KiB with its payload)
 * may be held in the connection's send buffer and leave together with the
 * next ones; it leaves at the latest when the client next waits for a reply
 * (cn_client_wait(), cn_client_exec() or any synchronous call), so
 * pipelining costs a few system calls per batch, not per request.
 */
int cn_client_submit(struct cn_client *c, struct cn_req *req);

/**
 * cn_client_wait - wait for the oldest outstanding request to complete.
 * @done: receives the completed request (its result, status[], bufs[].len,
 * prefix are filled in).
 * Returns 0 (look at (*done)->result), -EAGAIN if nothing is
 * outstanding, or a connection error (then every outstanding request is
 * failed with that error and *done is NULL).
 */
int cn_client_wait(struct cn_client *c, struct cn_req **done);

/** cn_client_outstanding - number of submitted, not yet completed requests. */
unsigned cn_client_outstanding(const struct cn_client *c);

/**
 * cn_client_exec - submit @req and wait for it (nothing else may be
 * outstanding). Returns req->result or a connection error.
 */
int cn_client_exec(struct cn_client *c, struct cn_req *req);

/* ---- GPU memory ----
 *
 * Chunks born in GPU memory reach the node two ways:
 *   - regions (the node copies): an engine on the node's host registers a
 *     cudaMalloc'd allocation once (cn_client_gpu_register(): a CUDA IPC
 *     handle the node maps); requests with cn_req.gpu then name chunks as
 *     (region, offset, length) and the node's copy engines move them between
 *     the device and its L1, with no copy in this process;
 *   - device pointers (this process copies): cn_client_store_device() and
 *     cn_client_retrieve_device() stage a chunk through host memory here,
 *     so they work with any node, remote ones and ones without a GPU.
 * Both need a usable CUDA device in this process, else -ENODEV and the CUDA
 * runtime's reason in cn_client_errmsg(). Nothing here initialises CUDA
 * until one of these calls is made.
 */

/**
 * cn_client_gpu_register - let the node copy to and from the allocation
 * [dev_base, dev_base + size) of this process's device memory. @dev_base
 * must be an allocation's start (what cudaMalloc returned). The region
 * belongs to the connection and is released when it closes.
 * Returns 0 and *region, -ENODEV (no CUDA here, or the node has no usable
 * GPU: the message says which), -EINVAL (not a device allocation start),
 * or a connection error.
 */
int cn_client_gpu_register(struct cn_client *c, void *dev_base, size_t size, uint32_t *region);

/**
 * cn_client_mem_register_device - cn_client_mem_register() for this
 * process's device memory (GPUDirect RDMA, verbs only): the node then RDMA-
 * reads STORE chunks straight from, and RDMA-writes RETRIEVE chunks straight
 * into, GPU memory named by ordinary CN_F_RDMA requests (cn_client_store /
 * retrieve and batches with device pointers inside the range). Tries a
 * dma-buf registration (the CUDA driver exports the range, the NIC maps it:
 * ibv_reg_dmabuf_mr), then ibv_reg_mr on the device pointer (needs the
 * nvidia-peermem module); *mode (may be NULL) says which: "dmabuf",
 * "peer-memory", or "staging" when neither. Release it with
 * cn_client_mem_unregister(). Returns 0, -EOPNOTSUPP (no GPUDirect here or
 * a tcp connection: both reasons in cn_client_errmsg; stage through host
 * memory with cn_client_store_device instead), -ENODEV (no CUDA here),
 * -EINVAL (not device memory), or cn_client_mem_register()'s errors.
 */
int cn_client_mem_register_device(struct cn_client *c, void *dev, size_t len, const char **mode);

/** cn_client_gpu_unregister - release @region. 0, -EINVAL (not this connection's), -errno. */
int cn_client_gpu_unregister(struct cn_client *c, uint32_t region);

/**
 * cn_client_store_device / cn_client_retrieve_device - cn_client_store() and
 * cn_client_retrieve() of a chunk in this process's device memory (@dev),
 * staged through host memory. The same returns, plus -ENODEV (no CUDA) and
 * -EIO (the device copy failed).
 */
int cn_client_store_device(struct cn_client *c, const struct cn_key *key, const void *dev,
			   uint32_t len);
int cn_client_retrieve_device(struct cn_client *c, const struct cn_key *key, void *dev,
			      uint32_t cap, uint32_t *len);

/* ---- keys ---- */

/**
 * cn_key_parse - a key from text: exactly 64 hex digits are the key's bytes;
 * any other string is hashed with SHA-256 (its UTF-8 bytes, no terminator).
 * Returns 0, or -EINVAL for an empty string.
 */
int cn_key_parse(const char *text, struct cn_key *out);

/** cn_key_format - 64 lower-case hex digits and a NUL into @out. */
void cn_key_format(const struct cn_key *key, char out[2 * CN_KEY_LEN + 1]);

/** cn_sha256 - SHA-256 (FIPS 180-4) of @len bytes at @data into @out. */
void cn_sha256(const void *data, size_t len, uint8_t out[32]);

#ifdef __cplusplus
}
#endif

#endif /* CACHENODE_CLIENT_H */
