/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RDMA verbs primitives (libibverbs + librdmacm): the building blocks of the
 * verbs transport. Built only when both libraries are found and the `rdma`
 * option is not disabled (CN_HAVE_VERBS is then defined for users of the
 * verbs library).
 *
 * One connection = one RC queue pair, a send CQ and a receive CQ that share a
 * completion channel, a pool of pre-posted receive buffers for small control
 * messages and a pool of send buffers for the same. The data path is one-sided
 * RDMA WRITE / READ between memory registered with cn_verbs_reg(); the
 * control path is two-sided SEND / RECV of messages up to msg_size bytes.
 *
 * Threads: a listener, a connection and a protection domain may each be used
 * by one thread at a time (no internal locking); different connections may be
 * driven by different threads. Registration (cn_verbs_reg / _dereg) may run
 * on any thread.
 *
 * Errors are 0 or -errno. Completion errors are mapped to errno values by
 * cn_verbs_status_errno(): remote access error -> -EACCES, transport or RNR
 * retries exhausted -> -ETIMEDOUT / -ENOBUFS, flushed (the QP is in the error
 * state) -> -ECONNRESET, and so on. The first error on a connection breaks it
 * (an RC QP in the error state cannot recover): every later post returns that
 * error, and cn_verbs_poll() returns it once no completion is left.
 */
#ifndef CN_VERBS_H
#define CN_VERBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ibv_mr;
struct cn_verbs_pd;
struct cn_verbs_listener;
struct cn_verbs_conn;

/* Defaults of struct cn_verbs_cfg (a 0 field takes these). */
#define CN_VERBS_SQ_DEPTH 128u /* send queue work requests */
#define CN_VERBS_NRECV	  32u  /* pre-posted receive buffers */
#define CN_VERBS_NSEND	  32u  /* control-message send buffers */
#define CN_VERBS_MSG_SIZE 4096u
#define CN_VERBS_SPIN_US  20u
#define CN_VERBS_RD_ATOM  16u /* outstanding RDMA READs per QP, at most */

/* Connection settings. A NULL cfg pointer means all defaults. */
struct cn_verbs_cfg {
	/*
	 * Device name ("rxe0", "mlx5_0"). Listen: the device whose protection
	 * domain the listener and its connections use (NULL: the device the
	 * bound address belongs to, or the first device for a wildcard
	 * address). Connect: the device the route to the peer must use
	 * (-ENODEV otherwise); NULL accepts whatever the route picks.
	 */
	const char *dev;
	unsigned sq_depth; /* send WRs outstanding at most; clamped to the device */
	unsigned nrecv;	   /* receive buffers (and receive WRs) */
	unsigned nsend;	   /* control-message send buffers */
	unsigned msg_size; /* bytes per control message buffer */
	/*
	 * cn_verbs_poll() busy-polls this long before it arms the CQs and
	 * sleeps on the completion channel. 0 = CN_VERBS_SPIN_US; use
	 * poll(..., 0) in a loop for pure busy polling.
	 */
	unsigned spin_us;
	int timeout_ms; /* connect (address, route, handshake), accept handshake; <= 0 = 10 s */
};

/* What a connection ended up with (after clamping to the device). */
struct cn_verbs_caps {
	unsigned sq_depth;	/* work requests the send queue holds */
	unsigned nrecv;
	unsigned nsend;
	unsigned msg_size;
	unsigned rd_atomic;	/* RDMA READs outstanding at once (initiator depth) */
	uint32_t max_msg_size;	/* largest RDMA transfer the port allows */
	char dev[64];		/* device name */
};

/* Access flags of cn_verbs_reg(), mapped to IBV_ACCESS_*. */
#define CN_VERBS_ACCESS_LOCAL_WRITE  0x1u /* the HCA may write it (READ target, RECV) */
#define CN_VERBS_ACCESS_REMOTE_READ  0x2u /* peers may RDMA READ it with the rkey */
#define CN_VERBS_ACCESS_REMOTE_WRITE 0x4u /* peers may RDMA WRITE it (needs LOCAL_WRITE) */

/*
 * A registered memory region. The fields are read only; the memory itself
 * stays owned by whoever registered it and must outlive the registration.
 */
struct cn_verbs_mr {
	void *addr;
	size_t len;
	uint32_t lkey;
	uint32_t rkey;	/* exposes exactly [addr, addr + len) with the granted access */
	struct ibv_mr *ibmr;	 /* internal */
	struct cn_verbs_pd *pd;	 /* internal: holds a reference on the PD */
};

enum cn_verbs_wc_op {
	CN_VERBS_WC_WRITE = 1,
	CN_VERBS_WC_READ,
	CN_VERBS_WC_SEND,
	CN_VERBS_WC_RECV,
};

/* One completion, as cn_verbs_poll() returns it. */
struct cn_verbs_wc {
	uint64_t wr_id;	   /* WRITE/READ: the poster's; RECV: the buffer index */
	int status;	   /* 0 or -errno (cn_verbs_status_errno()) */
	int wc_status;	   /* the raw enum ibv_wc_status, for logs */
	enum cn_verbs_wc_op op;
	uint32_t byte_len; /* RECV: message length */
	/*
	 * RECV: the message, inside a receive buffer lent to the caller until
	 * cn_verbs_recv_release(conn, wr_id) posts it again. Keep few lent:
	 * a peer sending while none is posted stalls on RNR retries.
	 */
	void *data;
};

/* One RDMA operation for cn_verbs_post_rdma(). */
struct cn_verbs_rdma {
	bool read;	     /* RDMA READ (remote -> local), else WRITE (local -> remote) */
	bool signaled;	     /* report a completion for it */
	void *local;	     /* registered with lkey; READ needs LOCAL_WRITE */
	uint32_t lkey;
	uint32_t len;
	uint64_t remote_addr;
	uint32_t rkey;
	uint64_t wr_id;	     /* given back in the completion */
};

/* ---- devices ---- */

/*
 * cn_verbs_available - is an RDMA device usable here?
 * @dev:    device name that must exist, or NULL for any device
 * @why:    on failure, a one-line reason for the user (may be NULL)
 * @whylen: size of @why
 *
 * Usable = libibverbs lists the device, it opens, and one of its ports is
 * ACTIVE. Returns 0, or -ENODEV (none, or @dev not found, or no active port),
 * with the reason in @why. Never prints.
 */
int cn_verbs_available(const char *dev, char *why, size_t whylen);

/* ---- connection management ---- */

/*
 * cn_verbs_listen - bind "HOST:PORT" (HOST may be 0.0.0.0 or ::; port 0
 * picks one) and listen for RDMA CM connection requests.
 * @cfg: settings for every accepted connection (copied; NULL = defaults)
 * @out: the listener, owned by the caller (cn_verbs_listener_destroy())
 *
 * The listener allocates the protection domain its connections share, so a
 * region registered once on cn_verbs_listener_pd() is usable on all of them.
 * Returns 0, -EINVAL (bad address), -ENODEV (no such / no usable device),
 * -EADDRINUSE, or another -errno.
 */
int cn_verbs_listen(const char *addr, const struct cn_verbs_cfg *cfg,
		    struct cn_verbs_listener **out);

/*
 * The listener's CM event channel descriptor (non-blocking, owned by @l): it
 * becomes readable when a connection request is waiting, so a thread can
 * poll it together with others and then call cn_verbs_accept(l, 0, ...).
 */
int cn_verbs_listener_fd(const struct cn_verbs_listener *l);

/* The bound port (after port 0). */
uint16_t cn_verbs_listener_port(const struct cn_verbs_listener *l);

/*
 * cn_verbs_listener_ident - the name of the RDMA device the listener is on
 * into @dev and, when it was bound to one address (not a wildcard), the port
 * GID rdma_cm resolved for that address into @gid, in IPv6 notation
 * ("fe80::...", "::ffff:10.0.0.5"); "" where unknown. Never fails.
 */
void cn_verbs_listener_ident(const struct cn_verbs_listener *l, char *dev, size_t devlen,
			     char *gid, size_t gidlen);

/* The listener's protection domain, borrowed (valid until the listener is destroyed). */
struct cn_verbs_pd *cn_verbs_listener_pd(struct cn_verbs_listener *l);

/*
 * cn_verbs_accept - wait for the next connection request and accept it.
 * @timeout_ms: < 0 waits forever, else -ETIMEDOUT after that long
 * @out:        the connection, owned by the caller (cn_verbs_conn_destroy());
 *              it keeps its own reference on the listener's PD, so it may
 *              outlive the listener
 *
 * A request that cannot be served (resources, a device other than the
 * listener's: -EXDEV) is rejected and its error returned; the listener stays
 * usable, so a server logs it and calls accept again.
 */
int cn_verbs_accept(struct cn_verbs_listener *l, int timeout_ms, struct cn_verbs_conn **out);

/* Close the listening endpoint and free it; *l becomes NULL; accepts NULL. */
void cn_verbs_listener_destroy(struct cn_verbs_listener **l);

/*
 * cn_verbs_connect - resolve "HOST:PORT", connect an RC QP to a listener.
 * @cfg: settings (NULL = defaults); cfg->dev and cfg->timeout_ms apply
 * @out: the connection, owned by the caller (cn_verbs_conn_destroy()); it
 *       owns a PD of its own (cn_verbs_conn_pd())
 *
 * Returns 0, -EINVAL, -EHOSTUNREACH / -ENETUNREACH (address or route),
 * -ECONNREFUSED (rejected, nobody listening), -ETIMEDOUT, -ENODEV (route on
 * another device than cfg->dev), or another -errno.
 */
int cn_verbs_connect(const char *addr, const struct cn_verbs_cfg *cfg,
		     struct cn_verbs_conn **out);

/*
 * Disconnect and free the connection and its buffers; *c becomes NULL;
 * accepts NULL. Outstanding work requests are abandoned: memory lent to them
 * may be reused once this returns. Regions registered on its PD stay valid
 * until deregistered (they hold the PD).
 */
void cn_verbs_conn_destroy(struct cn_verbs_conn **c);

/* The connection's protection domain, borrowed (valid while @c lives). */
struct cn_verbs_pd *cn_verbs_conn_pd(struct cn_verbs_conn *c);

/* Fill @caps with what the connection got. */
void cn_verbs_conn_caps(const struct cn_verbs_conn *c, struct cn_verbs_caps *caps);

/* "HOST:PORT" of the peer (static storage inside @c). */
const char *cn_verbs_conn_peer(const struct cn_verbs_conn *c);

/* 0 while the connection works, else the -errno that broke it. */
int cn_verbs_conn_error(const struct cn_verbs_conn *c);

/* ---- memory ---- */

/*
 * cn_verbs_reg - register [addr, addr + len) on @pd with CN_VERBS_ACCESS_*.
 * @out: the registration, owned by the caller (cn_verbs_dereg()); it holds a
 *       reference on @pd. The memory stays the caller's.
 * Returns 0, -EINVAL (len 0, REMOTE_WRITE without LOCAL_WRITE), -ENOMEM
 * (pinning limit: see `ulimit -l`), or another -errno.
 */
int cn_verbs_reg(struct cn_verbs_pd *pd, void *addr, size_t len, unsigned access,
		 struct cn_verbs_mr **out);

/*
 * cn_verbs_reg_dmabuf - register @len bytes at @offset of the dma-buf @fd
 * (device memory a GPU driver exported), addressed by peers as @iova
 * onwards (ibv_reg_dmabuf_mr): GPUDirect RDMA without a peer-memory
 * module. The fd may be closed once this returns. 0, -EINVAL, -ENOMEM, or
 * the device's -errno (-EOPNOTSUPP: no dma-buf support in the driver).
 */
int cn_verbs_reg_dmabuf(struct cn_verbs_pd *pd, int fd, uint64_t offset, size_t len, void *iova,
			unsigned access, struct cn_verbs_mr **out);

/* Deregister and free; *mr becomes NULL; accepts NULL. No WR may still use it. */
void cn_verbs_dereg(struct cn_verbs_mr **mr);

/* ---- data path ---- */

/*
 * cn_verbs_post_rdma - post @n RDMA WRITE/READ operations as one chain
 * (one doorbell). All or nothing: -EAGAIN when fewer than @n send-queue
 * slots are free (poll, then retry), -EINVAL when @n exceeds the send queue,
 * the connection's error when it is broken. The local buffers are lent to the
 * HCA until the operation's completion (or a later signaled one on this
 * connection) is polled.
 *
 * Unsignaled operations still occupy the send queue until a later signaled
 * one completes. If a caller leaves too many unsignaled in a row, one of them
 * is signaled internally (its completion is not returned), so the queue can
 * never fill up with work that will not be reported.
 */
int cn_verbs_post_rdma(struct cn_verbs_conn *c, const struct cn_verbs_rdma *ops, unsigned n);

/* One RDMA WRITE of @len bytes from @local (lkey) to @remote_addr (rkey). */
int cn_verbs_post_write(struct cn_verbs_conn *c, void *local, uint32_t lkey,
			uint64_t remote_addr, uint32_t rkey, uint32_t len, bool signaled,
			uint64_t wr_id);

/* One RDMA READ of @len bytes from @remote_addr (rkey) into @local (lkey, LOCAL_WRITE). */
int cn_verbs_post_read(struct cn_verbs_conn *c, void *local, uint32_t lkey,
		       uint64_t remote_addr, uint32_t rkey, uint32_t len, bool signaled,
		       uint64_t wr_id);

/*
 * cn_verbs_post_send - send a control message of @len (1..msg_size) bytes.
 * @buf is copied into a registered send buffer: the caller keeps it. The
 * send's completion is consumed inside cn_verbs_poll() (only a failure shows,
 * as the connection's error). Returns 0, -EMSGSIZE, -EAGAIN (no free send
 * buffer or queue slot: poll, then retry), or the connection's error.
 */
int cn_verbs_post_send(struct cn_verbs_conn *c, const void *buf, size_t len);

/*
 * cn_verbs_poll - collect up to @max completions of both CQs.
 * @timeout_ms: 0 = only what is there now; < 0 = wait without limit; else
 *              wait up to that long. Waiting busy-polls for spin_us, then
 *              arms the CQs and sleeps on the completion channel and the CM
 *              event channel (an idle waiter uses no CPU).
 *
 * Returns the number of completions written to @wc (1..max), 0 when
 * @timeout_ms is 0 and none is ready, -ETIMEDOUT when the wait ran out, or
 * the connection's error (-ECONNRESET after a disconnect or flush, -EACCES,
 * ...) once the connection is broken and no completion remains. Completions
 * that failed are returned with a non-zero status first, so a caller can
 * take back the buffers it lent; flushed receives and control sends are not
 * returned.
 */
int cn_verbs_poll(struct cn_verbs_conn *c, struct cn_verbs_wc *wc, int max, int timeout_ms);

/*
 * Give a RECV buffer back (its wc.wr_id): it is posted again. Returns 0,
 * -EINVAL (not a lent buffer), or the connection's error.
 */
int cn_verbs_recv_release(struct cn_verbs_conn *c, uint64_t wr_id);

/*
 * cn_verbs_conn_fds - the two descriptors an event loop waits on for @c:
 * fds[0] the completion channel, fds[1] the connection's CM event channel.
 * Both are non-blocking and owned by @c (valid until it is destroyed).
 */
void cn_verbs_conn_fds(const struct cn_verbs_conn *c, int fds[2]);

/*
 * cn_verbs_poll_nb - cn_verbs_poll() for event loops: never blocks.
 * Consumes what woke the loop (completion and CM events), then collects up
 * to @max completions. Returns their count (1..max); 0 when none is left, in
 * which case both CQs are armed and one of cn_verbs_conn_fds() becomes
 * readable when something new arrives; or the connection's error once it is
 * broken and nothing is left (like cn_verbs_poll()).
 */
int cn_verbs_poll_nb(struct cn_verbs_conn *c, struct cn_verbs_wc *wc, int max);

/* Free send-queue slots now (what cn_verbs_post_rdma() could take at once). */
unsigned cn_verbs_sq_free(const struct cn_verbs_conn *c);

/* ---- helpers ---- */

/* Map an enum ibv_wc_status to 0 / -errno (see the top of this file). */
int cn_verbs_status_errno(int wc_status);

/* libibverbs' name for an enum ibv_wc_status. */
const char *cn_verbs_status_str(int wc_status);

#endif /* CN_VERBS_H */
