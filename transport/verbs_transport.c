/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verbs transport: struct cn_transport_ops over RDMA (cn_verbs.h).
 *
 * Control path: the protocol's byte stream travels in SEND/RECV messages of
 * up to msg_size bytes (a frame may span several messages, a message may hold
 * several frames), so every opcode works exactly as over tcp.
 *
 * Data path: a session opened with CN_SESS_RDMA hands out RDMA operations
 * (rdma_next) for STORE/RETRIEVE requests carrying CN_F_RDMA; the worker
 * posts them as chains on the connection's RC queue pair, signalling only
 * the last operation of each chain (completions come in order), and reports
 * them back (rdma_done). The L1 pool is registered once with local access
 * only: the node is always the initiator, so no rkey of the node's memory is
 * ever handed out.
 *
 * Threads: an accept thread (control plane) takes connection requests,
 * waits for the handshake and hands each established connection to the
 * least-loaded worker through a queue and an eventfd. Each worker owns its
 * connections and runs one epoll loop over their completion and CM channels:
 * after activity it keeps polling for a short spin window, then arms the CQs
 * and blocks, so an idle node uses no CPU.
 *
 * Errors: any failed work completion breaks the queue pair; the worker
 * counts it by kind, destroys the connection first (nothing more lands in
 * the pool) and then closes the session, which discards the chunks of the
 * request in flight. Other connections are not affected.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#include "cachenode/proto.h"
#include "cn_transport.h"
#include "cn_verbs.h"

#define VT_POLL_BATCH	32
#define VT_TX_IOV	64
#define VT_PEND_OPS	64    /* operations taken from a session, not yet posted */
#define VT_SEND_RESERVE 8u    /* send-queue slots kept free for control messages */
#define VT_SPIN_NS	20000 /* keep polling this long after activity */
#define VT_MAX_EVENTS	64
#define VT_OP_READ	0x80000000u

struct vworker;

/* A received message lent by the connection until fully consumed. */
struct vt_rx {
	uint64_t id;
	const uint8_t *data;
	uint32_t len, off;
};

struct vconn {
	struct vconn *next, *prev; /* worker's list */
	struct vworker *w;
	struct cn_verbs_conn *vc;
	void *sess;
	struct cn_verbs_caps caps;
	char peer[80];

	struct vt_rx *rxq; /* caps.nrecv entries, FIFO */
	unsigned rxq_head, rxq_n;

	/* RDMA operations: taken (rdma_next) -> posted -> done */
	struct cn_rdma_op pend[VT_PEND_OPS];
	unsigned npend;
	uint64_t ops_posted, ops_done;
	uint32_t *op_len; /* per posted op, ring of caps.sq_depth: len | VT_OP_READ */

	uint8_t *txmsg; /* caps.msg_size: one control message being packed */
	struct cn_wake wake; /* handed to the session at open() */
	bool dead;	/* protocol error: flush output, then close */
	bool doomed;	/* closed; freed at the end of the event batch */
};

struct vworker {
	struct cn_server *srv;
	unsigned id;
	int ep;
	int evfd; /* hand-off and stop */
	pthread_mutex_t lock;
	struct vconn *inbox; /* handed-off connections (vconn->next chain) */
	struct vconn *conns; /* owned list */
	struct vconn *doomed;
	atomic_uint nconns;
	struct cn_transport_stats *st;
	struct cn_verbs_stats *vs;
	/* async completions (cn_transport.h): an MPSC stack, any thread pushes */
	struct cn_async *_Atomic done;
};

struct cn_server {
	struct cn_server_cfg cfg;
	struct cn_verbs_listener *l;
	struct cn_verbs_mr *mr;	       /* the rdma region, local access only */
	struct cn_verbs_stats *own_vs; /* when the caller gave no verbs_stats */
	char addr[96];
	struct vworker *w;
	pthread_t acceptor;
	bool acceptor_started;
	int stopfd; /* eventfd: wakes the acceptor at stop */
	atomic_bool stopping;
	uint64_t stop_deadline_ns; /* set before stopping is raised */
};

static uint64_t vt_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- server: connection life ---- */

static void vconn_count_error(struct vconn *c, const struct cn_verbs_wc *wc)
{
	struct cn_verbs_stats *vs = c->w->vs;

	switch (wc->wc_status) {
	case IBV_WC_REM_ACCESS_ERR:
	case IBV_WC_LOC_PROT_ERR:
	case IBV_WC_REM_INV_REQ_ERR:
		CN_STAT_INC(vs, err_remote_access);
		break;
	case IBV_WC_RETRY_EXC_ERR:
	case IBV_WC_RNR_RETRY_EXC_ERR:
		CN_STAT_INC(vs, err_timeout);
		break;
	case IBV_WC_WR_FLUSH_ERR:
		CN_STAT_INC(vs, err_flush);
		break;
	default:
		CN_STAT_INC(vs, err_other);
		break;
	}
}

/*
 * End a connection: the queue pair goes first (no more DMA into the pool),
 * then the session releases its chunks. The struct itself is freed at the end
 * of the event batch, since other events of the batch may still name it.
 */
static void vconn_close(struct vconn *c, int err)
{
	struct vworker *w = c->w;

	if (c->doomed)
		return;
	c->doomed = true;
	if (err == -ECONNRESET)
		CN_STAT_INC(w->vs, disconnects);
	else if (err != 0 && err != -ESHUTDOWN)
		CN_STAT_INC(w->st, conn_errors);
	if (err != 0 && err != -ECONNRESET && err != -ESHUTDOWN &&
	    cn_verbs_conn_error(c->vc) != 0)
		CN_STAT_INC(w->vs, qp_errors);
	cn_verbs_conn_destroy(&c->vc); /* closes its fds: they leave the epoll set */
	if (c->sess != NULL)
		w->srv->cfg.sess->close(c->sess, err == -ECONNRESET ? 0 : err);
	c->sess = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = w->doomed;
	w->doomed = c;
	atomic_fetch_sub(&w->nconns, 1);
	CN_STAT_INC(w->st, conns_closed);
	CN_STAT_ADD(w->st, conns_open, (uint64_t)-1);
}

static void vconn_free(struct vconn *c)
{
	cn_verbs_conn_destroy(&c->vc);
	free(c->rxq);
	free(c->op_len);
	free(c->txmsg);
	free(c);
}

/* Feed received messages to the session while it reads. */
static int vconn_rx(struct vconn *c, bool *progress)
{
	const struct cn_session_ops *so = c->w->srv->cfg.sess;

	while (c->rxq_n > 0 && !c->dead && !so->rx_paused(c->sess)) {
		struct vt_rx *m = &c->rxq[c->rxq_head];
		void *buf;
		size_t room, n;
		int rc;

		so->rx_buf(c->sess, &buf, &room);
		n = m->len - m->off;
		if (n > room)
			n = room;
		memcpy(buf, m->data + m->off, n);
		m->off += (uint32_t)n;
		CN_STAT_ADD(c->w->st, bytes_rx, n);
		*progress = true;
		if (m->off == m->len) {
			rc = cn_verbs_recv_release(c->vc, m->id);
			if (rc != 0)
				return rc;
			c->rxq_head = (c->rxq_head + 1) % c->caps.nrecv;
			c->rxq_n--;
		}
		if (so->rx_done(c->sess, n) < 0)
			c->dead = true; /* send what is queued (the error frame), then close */
	}
	return 0;
}

/* Take operations from the session and post as many as the send queue allows. */
static int vconn_rdma(struct vconn *c, bool *progress)
{
	const struct cn_session_ops *so = c->w->srv->cfg.sess;
	struct cn_server *srv = c->w->srv;
	struct cn_verbs_rdma ops[VT_PEND_OPS];
	uintptr_t lo = (uintptr_t)srv->cfg.rdma_region;
	uintptr_t hi = lo + srv->cfg.rdma_region_len;

	for (;;) {
		unsigned room, n, i;
		int rc;

		if (c->npend < VT_PEND_OPS) {
			int k = so->rdma_next(c->sess, c->pend + c->npend, (int)(VT_PEND_OPS - c->npend));
			if (k > 0)
				c->npend += (unsigned)k;
		}
		if (c->npend == 0)
			return 0;
		room = cn_verbs_sq_free(c->vc);
		room = room > VT_SEND_RESERVE ? room - VT_SEND_RESERVE : 0;
		n = c->npend < room ? c->npend : room;
		if (n == 0)
			return 0; /* completions will free slots */
		for (i = 0; i < n; i++) {
			const struct cn_rdma_op *o = &c->pend[i];
			uintptr_t a = (uintptr_t)o->local;
			uint64_t seq = c->ops_posted + i;

			if (o->len == 0 || o->len >= VT_OP_READ || a < lo || a + o->len > hi ||
			    o->len > c->caps.max_msg_size)
				return -EFAULT; /* a session bug: never touch other memory */
			ops[i] = (struct cn_verbs_rdma){
				.read = o->read,
				.signaled = i + 1 == n,
				.local = o->local,
				.lkey = srv->mr->lkey,
				.len = o->len,
				.remote_addr = o->remote_addr,
				.rkey = o->rkey,
				.wr_id = seq,
			};
			c->op_len[seq % c->caps.sq_depth] = o->len | (o->read ? VT_OP_READ : 0);
		}
		rc = cn_verbs_post_rdma(c->vc, ops, n);
		if (rc == -EAGAIN)
			return 0;
		if (rc != 0)
			return rc;
		for (i = 0; i < n; i++) {
			if (ops[i].read)
				CN_STAT_INC(c->w->vs, rdma_reads);
			else
				CN_STAT_INC(c->w->vs, rdma_writes);
		}
		CN_STAT_ADD(c->w->vs, wr_posted, n);
		c->ops_posted += n;
		memmove(c->pend, c->pend + n, (c->npend - n) * sizeof(c->pend[0]));
		c->npend -= n;
		*progress = true;
	}
}

/* Operations up to and including @seq (one of ours) completed. */
static int vconn_rdma_done(struct vconn *c, uint64_t seq)
{
	unsigned n = (unsigned)(seq + 1 - c->ops_done);

	for (uint64_t i = c->ops_done; i <= seq; i++) {
		uint32_t v = c->op_len[i % c->caps.sq_depth];

		if (v & VT_OP_READ)
			CN_STAT_ADD(c->w->vs, bytes_read, v & ~VT_OP_READ);
		else
			CN_STAT_ADD(c->w->vs, bytes_written, v);
	}
	c->ops_done = seq + 1;
	return c->w->srv->cfg.sess->rdma_done(c->sess, n);
}

/* Pack pending output into control messages while send buffers last. */
static int vconn_tx(struct vconn *c, bool *progress)
{
	const struct cn_session_ops *so = c->w->srv->cfg.sess;
	struct iovec iov[VT_TX_IOV];

	for (;;) {
		int n = so->tx_iov(c->sess, iov, VT_TX_IOV), rc;
		size_t len = 0;

		if (n <= 0)
			return 0;
		for (int i = 0; i < n && len < c->caps.msg_size; i++) {
			size_t k = iov[i].iov_len;

			if (k > c->caps.msg_size - len)
				k = c->caps.msg_size - len;
			memcpy(c->txmsg + len, iov[i].iov_base, k);
			len += k;
		}
		if (len == 0)
			return 0;
		rc = cn_verbs_post_send(c->vc, c->txmsg, len);
		if (rc == -EAGAIN)
			return 0; /* a send completion will bring us back */
		if (rc != 0)
			return rc;
		CN_STAT_INC(c->w->vs, sends);
		CN_STAT_INC(c->w->vs, wr_posted);
		CN_STAT_INC(c->w->st, tx_calls);
		CN_STAT_ADD(c->w->st, bytes_tx, len);
		*progress = true;
		if (so->tx_done(c->sess, len) < 0)
			c->dead = true;
	}
}

/* Queue one received message; a zero-length one is given back at once. */
static int vconn_queue_rx(struct vconn *c, const struct cn_verbs_wc *wc)
{
	CN_STAT_INC(c->w->vs, recvs);
	CN_STAT_INC(c->w->st, rx_calls);
	if (wc->byte_len == 0)
		return cn_verbs_recv_release(c->vc, wc->wr_id);
	if (c->rxq_n == c->caps.nrecv)
		return -EIO;
	c->rxq[(c->rxq_head + c->rxq_n) % c->caps.nrecv] =
		(struct vt_rx){wc->wr_id, wc->data, wc->byte_len, 0};
	c->rxq_n++;
	return 0;
}

/* Do everything the connection can do now; it ends with its CQs armed. */
static void vconn_service(struct vconn *c)
{
	const struct cn_session_ops *so = c->w->srv->cfg.sess;
	struct cn_verbs_wc wc[VT_POLL_BATCH];

	while (!c->doomed) {
		bool progress = false;
		int n = cn_verbs_poll_nb(c->vc, wc, VT_POLL_BATCH), rc = 0;
		struct iovec probe;

		if (n < 0) {
			vconn_close(c, n);
			return;
		}
		CN_STAT_ADD(c->w->vs, completions, (unsigned)n);
		for (int i = 0; i < n && rc == 0; i++) {
			progress = true;
			if (wc[i].status != 0) {
				vconn_count_error(c, &wc[i]);
				rc = wc[i].status;
			} else if (wc[i].op == CN_VERBS_WC_RECV) {
				rc = vconn_queue_rx(c, &wc[i]);
			} else if (wc[i].wr_id < c->ops_done || wc[i].wr_id >= c->ops_posted) {
				rc = -EIO; /* not an operation of ours */
			} else if (vconn_rdma_done(c, wc[i].wr_id) < 0) {
				c->dead = true; /* protocol error found while finishing a request */
			}
		}
		if (rc == 0)
			rc = vconn_rx(c, &progress);
		if (rc == 0 && !c->dead)
			rc = vconn_rdma(c, &progress);
		if (rc == 0)
			rc = vconn_tx(c, &progress);
		if (rc != 0) {
			vconn_close(c, rc);
			return;
		}
		if (c->dead && so->tx_iov(c->sess, &probe, 1) == 0 &&
		    cn_verbs_sq_free(c->vc) == c->caps.sq_depth) {
			vconn_close(c, -EPROTO); /* the error frame has left */
			return;
		}
		if (!progress)
			return;
	}
}

/* wake.post: push @job on worker @wp's completion stack (lock free) and wake it. */
static void vt_wake_post(void *wp, struct cn_async *job)
{
	struct vworker *w = wp;

	cn_async_push(&w->done, w->evfd, job);
}

/*
 * Run the posted completions: the session takes each job, then its
 * connection is serviced (replies released, reading resumed). An orphaned
 * job is freed by async_done() and its connection is not touched.
 */
static void vworker_run_done(struct vworker *w)
{
	const struct cn_session_ops *so = w->srv->cfg.sess;

	for (struct cn_async *j = cn_async_take(&w->done), *next; j != NULL; j = next) {
		struct vconn *c = j->conn;
		int r;

		next = j->next;
		r = so->async_done(j);
		if (r == 0)
			continue;
		if (r < 0)
			c->dead = true;
		vconn_service(c);
	}
}

static int vconn_start(struct vworker *w, struct vconn *c)
{
	const struct cn_server_cfg *cfg = &w->srv->cfg;
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
	int fds[2];

	c->w = w;
	cn_verbs_conn_caps(c->vc, &c->caps);
	snprintf(c->peer, sizeof(c->peer), "%s", cn_verbs_conn_peer(c->vc));
	c->rxq = calloc(c->caps.nrecv, sizeof(*c->rxq));
	c->op_len = calloc(c->caps.sq_depth, sizeof(*c->op_len));
	c->txmsg = malloc(c->caps.msg_size);
	if (c->rxq == NULL || c->op_len == NULL || c->txmsg == NULL)
		return -ENOMEM;
	cn_verbs_conn_fds(c->vc, fds);
	if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fds[0], &ev) != 0 ||
	    epoll_ctl(w->ep, EPOLL_CTL_ADD, fds[1], &ev) != 0)
		return -errno;
	c->wake = (struct cn_wake){.post = vt_wake_post, .worker = w, .conn = c};
	c->sess = cfg->sess->open(cfg->sess_arg, w->id, c->peer, CN_SESS_RDMA, &c->wake);
	if (c->sess == NULL)
		return -ENOMEM;
	return 0;
}

/* Take the connections the acceptor handed to this worker. */
static void vworker_adopt(struct vworker *w)
{
	struct vconn *list;
	uint64_t v;

	if (read(w->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		return;
	pthread_mutex_lock(&w->lock);
	list = w->inbox;
	w->inbox = NULL;
	pthread_mutex_unlock(&w->lock);
	while (list != NULL) {
		struct vconn *c = list;

		list = c->next;
		c->next = c->prev = NULL;
		if (vconn_start(w, c) != 0) {
			CN_STAT_INC(w->st, conns_refused);
			atomic_fetch_sub(&w->nconns, 1);
			vconn_free(c);
			continue;
		}
		c->next = w->conns;
		if (w->conns)
			w->conns->prev = c;
		w->conns = c;
		CN_STAT_INC(w->st, conns_accepted);
		CN_STAT_ADD(w->st, conns_open, 1);
		vconn_service(c); /* messages may have arrived before we listened */
	}
}

static void vworker_reap(struct vworker *w)
{
	while (w->doomed != NULL) {
		struct vconn *c = w->doomed;

		w->doomed = c->next;
		vconn_free(c);
	}
}

/* Draining: close every idle connection; all of them when @force. */
static void vworker_drain(struct vworker *w, bool force)
{
	const struct cn_session_ops *so = w->srv->cfg.sess;

	for (struct vconn *c = w->conns, *nx; c != NULL; c = nx) {
		nx = c->next;
		if (so->idle(c->sess))
			vconn_close(c, 0);
		else if (force)
			vconn_close(c, -ESHUTDOWN);
	}
	vworker_reap(w);
}

/* ---- server: ops ---- */

static void *vt_acceptor(void *arg)
{
	struct cn_server *srv = arg;

	while (!atomic_load(&srv->stopping)) {
		struct pollfd pfd[2] = {{.fd = cn_verbs_listener_fd(srv->l), .events = POLLIN},
					{.fd = srv->stopfd, .events = POLLIN}};
		struct cn_verbs_conn *vc = NULL;
		struct vworker *best;
		struct vconn *c;
		uint64_t one = 1;
		int rc;

		/* sleep until a request or stop: an idle acceptor uses no CPU */
		if (poll(pfd, 2, -1) < 0 || pfd[1].revents != 0)
			continue;
		rc = cn_verbs_accept(srv->l, 0, &vc);
		if (rc == -ETIMEDOUT)
			continue; /* another CM event (consumed), or none after all */
		if (rc != 0) {
			CN_STAT_INC(srv->w[0].vs, accept_errors);
			if (rc == -ENODEV)
				break; /* the device went away */
			continue;
		}
		c = calloc(1, sizeof(*c));
		if (c == NULL || atomic_load(&srv->stopping)) {
			cn_verbs_conn_destroy(&vc);
			free(c);
			continue;
		}
		c->vc = vc;
		best = &srv->w[0];
		for (unsigned i = 1; i < srv->cfg.nworkers; i++)
			if (atomic_load(&srv->w[i].nconns) < atomic_load(&best->nconns))
				best = &srv->w[i];
		atomic_fetch_add(&best->nconns, 1);
		pthread_mutex_lock(&best->lock);
		c->next = best->inbox;
		best->inbox = c;
		pthread_mutex_unlock(&best->lock);
		if (write(best->evfd, &one, sizeof(one)) < 0) {
			/* the counter is non-zero already: the worker will look */
		}
	}
	return NULL;
}

static void vt_server_destroy(struct cn_server **sp);

static int vt_server_create(const struct cn_server_cfg *cfg, struct cn_server **out)
{
	struct cn_verbs_cfg vcfg = {.dev = cfg->rdma_dev};
	struct cn_server *srv;
	char host[80];
	uint16_t port;
	int rc;

	if (cfg->nworkers == 0 || cfg->sess == NULL || cfg->sess->rdma_next == NULL ||
	    cfg->sess->rdma_done == NULL || cfg->rdma_region == NULL || cfg->rdma_region_len == 0 ||
	    cfg->stats == NULL)
		return -EINVAL;
	if (cn_parse_hostport(cfg->listen, host, sizeof(host), &port) != 0)
		return -EINVAL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	srv->cfg = *cfg;
	srv->stopfd = -1;
	srv->w = calloc(cfg->nworkers, sizeof(*srv->w));
	if (cfg->verbs_stats == NULL)
		srv->own_vs = calloc(cfg->nworkers, sizeof(*srv->own_vs));
	if (srv->w == NULL || (cfg->verbs_stats == NULL && srv->own_vs == NULL)) {
		free(srv->w);
		free(srv->own_vs);
		free(srv);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < cfg->nworkers; i++) {
		struct vworker *w = &srv->w[i];

		w->srv = srv;
		w->id = i;
		w->ep = -1;
		w->evfd = -1;
		pthread_mutex_init(&w->lock, NULL);
		w->st = &cfg->stats[i];
		w->vs = cfg->verbs_stats != NULL ? &cfg->verbs_stats[i] : &srv->own_vs[i];
	}
	for (unsigned i = 0; i < cfg->nworkers; i++) {
		struct vworker *w = &srv->w[i];
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};

		w->ep = epoll_create1(EPOLL_CLOEXEC);
		w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->ep < 0 || w->evfd < 0 || epoll_ctl(w->ep, EPOLL_CTL_ADD, w->evfd, &ev) != 0) {
			rc = -errno;
			goto fail;
		}
	}
	srv->stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (srv->stopfd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = cn_verbs_listen(cfg->listen, &vcfg, &srv->l);
	if (rc != 0)
		goto fail;
	rc = cn_verbs_reg(cn_verbs_listener_pd(srv->l), cfg->rdma_region, cfg->rdma_region_len,
			  CN_VERBS_ACCESS_LOCAL_WRITE, &srv->mr);
	if (rc != 0)
		goto fail;
	snprintf(srv->addr, sizeof(srv->addr), strchr(host, ':') ? "[%s]:%u" : "%s:%u", host,
		 cn_verbs_listener_port(srv->l));
	rc = pthread_create(&srv->acceptor, NULL, vt_acceptor, srv);
	if (rc != 0) {
		rc = -rc;
		goto fail;
	}
	srv->acceptor_started = true;
	pthread_setname_np(srv->acceptor, "cn-verbs-accept");
	*out = srv;
	return 0;
fail:
	vt_server_destroy(&srv);
	return rc;
}

static const char *vt_server_addr(const struct cn_server *srv)
{
	return srv->addr;
}

static void vt_server_rdma_ident(const struct cn_server *srv, char *dev, size_t devlen, char *gid,
				 size_t gidlen)
{
	cn_verbs_listener_ident(srv->l, dev, devlen, gid, gidlen);
}

static int vt_server_run(struct cn_server *srv, unsigned worker)
{
	struct vworker *w;
	struct epoll_event ev[VT_MAX_EVENTS];
	uint64_t spin_until = 0;

	if (worker >= srv->cfg.nworkers)
		return -EINVAL;
	w = &srv->w[worker];
	for (;;) {
		int timeout = -1, n;

		if (atomic_load(&srv->stopping)) {
			vworker_drain(w, vt_now_ns() >= srv->stop_deadline_ns);
			if (w->conns == NULL) {
				/* a late hand-off: the acceptor may have queued one before it saw stop */
				vworker_adopt(w);
				vworker_drain(w, true);
				return 0;
			}
			timeout = 50;
		}
		if (spin_until != 0 && vt_now_ns() < spin_until) {
			timeout = 0;
		} else if (spin_until != 0) {
			spin_until = 0;
			CN_STAT_INC(w->vs, cq_waits);
		}
		n = epoll_wait(w->ep, ev, VT_MAX_EVENTS, timeout);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			continue;
		CN_STAT_INC(w->st, wakeups);
		for (int i = 0; i < n; i++) {
			if (ev[i].data.ptr == w) {
				vworker_adopt(w);
				vworker_run_done(w);
			}
			else
				vconn_service(ev[i].data.ptr);
		}
		vworker_reap(w);
		spin_until = vt_now_ns() + VT_SPIN_NS;
	}
}

static void vt_server_stop(struct cn_server *srv, int grace_ms)
{
	uint64_t one = 1;

	srv->stop_deadline_ns = vt_now_ns() + (uint64_t)(grace_ms > 0 ? grace_ms : 0) * 1000000ull;
	atomic_store(&srv->stopping, true);
	if (srv->stopfd >= 0 && write(srv->stopfd, &one, sizeof(one)) < 0) {
		/* non-zero already: the acceptor will see it */
	}
	for (unsigned i = 0; i < srv->cfg.nworkers; i++)
		if (srv->w[i].evfd >= 0 && write(srv->w[i].evfd, &one, sizeof(one)) < 0) {
			/* non-zero already: the worker will look */
		}
}

static void vt_server_destroy(struct cn_server **sp)
{
	struct cn_server *srv;

	if (sp == NULL || *sp == NULL)
		return;
	srv = *sp;
	*sp = NULL;
	atomic_store(&srv->stopping, true);
	if (srv->acceptor_started) {
		uint64_t one = 1;

		if (write(srv->stopfd, &one, sizeof(one)) < 0) {
			/* non-zero already */
		}
		pthread_join(srv->acceptor, NULL);
	}
	for (unsigned i = 0; i < srv->cfg.nworkers; i++) {
		struct vworker *w = &srv->w[i];

		while (w->conns != NULL)
			vconn_close(w->conns, -ESHUTDOWN);
		/* every session is closed: the jobs left are orphaned, async_done frees them */
		for (struct cn_async *j = cn_async_take(&w->done), *nx; j != NULL; j = nx) {
			nx = j->next;
			if (srv->cfg.sess->async_done)
				srv->cfg.sess->async_done(j);
		}
		while (w->inbox != NULL) {
			struct vconn *c = w->inbox;
			w->inbox = c->next;
			vconn_free(c);
		}
		vworker_reap(w);
		if (w->ep >= 0)
			close(w->ep);
		if (w->evfd >= 0)
			close(w->evfd);
		pthread_mutex_destroy(&w->lock);
	}
	cn_verbs_dereg(&srv->mr);
	cn_verbs_listener_destroy(&srv->l);
	if (srv->stopfd >= 0)
		close(srv->stopfd);
	free(srv->w);
	free(srv->own_vs);
	free(srv);
}

/* ---- client ---- */

struct cn_tconn {
	struct cn_verbs_conn *vc;
	struct cn_verbs_caps caps;
	int timeout_ms;
	uint8_t *txmsg; /* message being packed */
	size_t txlen;
	struct vt_rx *rxq;
	unsigned rxq_head, rxq_n;
};

/* Wait for completions; received messages join the queue. */
static int vt_client_poll(struct cn_tconn *t)
{
	struct cn_verbs_wc wc[VT_POLL_BATCH];
	int n = cn_verbs_poll(t->vc, wc, VT_POLL_BATCH, t->timeout_ms > 0 ? t->timeout_ms : -1);

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		if (wc[i].status != 0)
			return wc[i].status;
		if (wc[i].op != CN_VERBS_WC_RECV)
			continue;
		if (wc[i].byte_len == 0) {
			int rc = cn_verbs_recv_release(t->vc, wc[i].wr_id);
			if (rc != 0)
				return rc;
			continue;
		}
		if (t->rxq_n == t->caps.nrecv)
			return -EIO;
		t->rxq[(t->rxq_head + t->rxq_n) % t->caps.nrecv] =
			(struct vt_rx){wc[i].wr_id, wc[i].data, wc[i].byte_len, 0};
		t->rxq_n++;
	}
	return 0;
}

static int vt_client_flush(struct cn_tconn *t)
{
	while (t->txlen > 0) {
		int rc = cn_verbs_post_send(t->vc, t->txmsg, t->txlen);

		if (rc == 0) {
			t->txlen = 0;
			return 0;
		}
		if (rc != -EAGAIN)
			return rc;
		rc = vt_client_poll(t); /* send completions give buffers back */
		if (rc != 0)
			return rc;
	}
	return 0;
}

static void vt_close(struct cn_tconn **tp)
{
	struct cn_tconn *t;

	if (tp == NULL || *tp == NULL)
		return;
	t = *tp;
	*tp = NULL;
	cn_verbs_conn_destroy(&t->vc);
	free(t->txmsg);
	free(t->rxq);
	free(t);
}

static int vt_connect(const struct cn_connect_cfg *cfg, struct cn_tconn **out)
{
	struct cn_verbs_cfg vcfg = {.dev = cfg->rdma_dev, .timeout_ms = cfg->timeout_ms};
	struct cn_tconn *t = calloc(1, sizeof(*t));
	int rc;

	if (t == NULL)
		return -ENOMEM;
	t->timeout_ms = cfg->timeout_ms;
	rc = cn_verbs_connect(cfg->addr, &vcfg, &t->vc);
	if (rc != 0) {
		free(t);
		return rc;
	}
	cn_verbs_conn_caps(t->vc, &t->caps);
	t->txmsg = malloc(t->caps.msg_size);
	t->rxq = calloc(t->caps.nrecv, sizeof(*t->rxq));
	if (t->txmsg == NULL || t->rxq == NULL) {
		vt_close(&t);
		return -ENOMEM;
	}
	*out = t;
	return 0;
}

static int vt_sendv(struct cn_tconn *t, const struct iovec *iov, int iovcnt, unsigned flags)
{
	for (int i = 0; i < iovcnt; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left > 0) {
			size_t k = t->caps.msg_size - t->txlen;

			if (k > left)
				k = left;
			memcpy(t->txmsg + t->txlen, p, k);
			t->txlen += k;
			p += k;
			left -= k;
			if (t->txlen == t->caps.msg_size) {
				int rc = vt_client_flush(t);
				if (rc != 0)
					return rc;
			}
		}
	}
	return (flags & CN_SEND_MORE) ? 0 : vt_client_flush(t);
}

static int vt_recv(struct cn_tconn *t, void *buf, size_t len)
{
	uint8_t *p = buf;
	int rc = vt_client_flush(t);

	if (rc != 0)
		return rc;
	while (len > 0) {
		struct vt_rx *m;
		size_t k;

		if (t->rxq_n == 0) {
			rc = vt_client_poll(t);
			if (rc != 0)
				return rc;
			continue;
		}
		m = &t->rxq[t->rxq_head];
		k = m->len - m->off;
		if (k > len)
			k = len;
		memcpy(p, m->data + m->off, k);
		m->off += (uint32_t)k;
		p += k;
		len -= k;
		if (m->off == m->len) {
			rc = cn_verbs_recv_release(t->vc, m->id);
			if (rc != 0)
				return rc;
			t->rxq_head = (t->rxq_head + 1) % t->caps.nrecv;
			t->rxq_n--;
		}
	}
	return 0;
}

static int vt_mem_reg(struct cn_tconn *t, void *addr, size_t len, void **handle, uint32_t *rkey)
{
	struct cn_verbs_mr *mr;
	int rc = cn_verbs_reg(cn_verbs_conn_pd(t->vc), addr, len,
			      CN_VERBS_ACCESS_LOCAL_WRITE | CN_VERBS_ACCESS_REMOTE_READ |
				      CN_VERBS_ACCESS_REMOTE_WRITE,
			      &mr);

	if (rc != 0)
		return rc;
	*handle = mr;
	*rkey = mr->rkey;
	return 0;
}

static int vt_mem_reg_dmabuf(struct cn_tconn *t, int fd, uint64_t offset, size_t len, void *iova,
			     void **handle, uint32_t *rkey)
{
	struct cn_verbs_mr *mr;
	int rc = cn_verbs_reg_dmabuf(cn_verbs_conn_pd(t->vc), fd, offset, len, iova,
				     CN_VERBS_ACCESS_LOCAL_WRITE | CN_VERBS_ACCESS_REMOTE_READ |
					     CN_VERBS_ACCESS_REMOTE_WRITE,
				     &mr);

	if (rc != 0)
		return rc;
	*handle = mr;
	*rkey = mr->rkey;
	return 0;
}

static void vt_mem_dereg(struct cn_tconn *t, void *handle)
{
	struct cn_verbs_mr *mr = handle;

	(void)t;
	cn_verbs_dereg(&mr);
}

const struct cn_transport_ops cn_verbs_ops = {
	.name = "verbs",
	.server_create = vt_server_create,
	.server_addr = vt_server_addr,
	.server_run = vt_server_run,
	.server_stop = vt_server_stop,
	.server_destroy = vt_server_destroy,
	.server_rdma_ident = vt_server_rdma_ident,
	.connect = vt_connect,
	.sendv = vt_sendv,
	.recv = vt_recv,
	.close = vt_close,
	.mem_reg = vt_mem_reg,
	.mem_reg_dmabuf = vt_mem_reg_dmabuf,
	.mem_dereg = vt_mem_dereg,
};
