/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RDMA verbs primitives: RDMA CM connection management, registration, RDMA
 * WRITE/READ and SEND/RECV on one RC QP per connection (see cn_verbs.h).
 *
 * Send-queue accounting. Every send WR gets a sequence number (its wr_id in
 * the verbs WR); slot seq % sq_depth remembers the caller's wr_id, the kind,
 * and the control send buffer it uses. An RC send queue completes in order,
 * so a completion for sequence s retires every WR up to s, signaled or not:
 * sq_tail = s + 1. Posting never lets more than sq_depth WRs be outstanding,
 * and the send CQ is sq_depth deep, so neither can overflow. When the QP
 * fails, every outstanding WR (signaled or not) completes with an error, in
 * order, and the same bookkeeping hands each one back.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "cn_transport.h"
#include "cn_verbs.h"

#define VERBS_DEFAULT_TIMEOUT_MS 10000
#define VERBS_POLL_BATCH	 16
#define VERBS_CM_CHECK_EVERY	 1024u /* timeout-0 polls between disconnect checks */

struct cn_verbs_pd {
	struct ibv_context *ctx; /* librdmacm's: never closed here */
	struct ibv_pd *pd;
	struct ibv_device_attr attr;
	int refs; /* listener, connections, registrations; atomic */
};

struct cn_verbs_listener {
	struct cn_verbs_cfg cfg;
	char dev[64];
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
	struct cn_verbs_pd *pd;
	uint16_t port;
};

struct sq_slot {
	uint64_t wr_id;	 /* the caller's */
	int32_t sendbuf; /* control send buffer, -1 for none */
	uint8_t op;	 /* enum cn_verbs_wc_op */
	uint8_t report;	 /* the caller asked for a completion */
};

struct cn_verbs_conn {
	struct rdma_event_channel *cm_ch; /* this connection's own */
	struct rdma_cm_id *id;
	struct cn_verbs_pd *pd;		  /* one reference */
	struct ibv_comp_channel *comp_ch; /* both CQs */
	struct ibv_cq *scq, *rcq;
	struct ibv_qp *qp;
	struct cn_verbs_caps caps;
	unsigned spin_us;
	bool established;
	int err; /* first error, sticky */

	/* send queue */
	uint64_t sq_head; /* next sequence number */
	uint64_t sq_tail; /* oldest outstanding */
	unsigned unsig_run;
	struct sq_slot *slots;
	struct ibv_send_wr *wrs; /* sq_depth, for chains */
	struct ibv_sge *sges;
	unsigned cm_check;

	/* control messages */
	uint8_t *rbufs, *sbufs;
	struct ibv_mr *rmr, *smr;
	uint8_t *rlent;	 /* per receive buffer: 1 = not posted (lent or failed) */
	uint32_t *sfree; /* stack of free send buffers */
	unsigned nsfree;

	char peer[80];
};

static int neg_errno(int fallback)
{
	return errno > 0 ? -errno : -fallback;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t deadline_of(int timeout_ms)
{
	return timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000u;
}

/* Milliseconds left until @deadline for poll(): -1 forever, 0 when passed. */
static int ms_left(uint64_t deadline)
{
	uint64_t t;

	if (deadline == UINT64_MAX)
		return -1;
	t = now_ns();
	if (t >= deadline)
		return 0;
	return (int)((deadline - t + 999999u) / 1000000u);
}

static int set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return neg_errno(EIO);
	return 0;
}

int cn_verbs_status_errno(int wc_status)
{
	switch ((enum ibv_wc_status)wc_status) {
	case IBV_WC_SUCCESS:
		return 0;
	case IBV_WC_LOC_LEN_ERR:
		return -EMSGSIZE;
	case IBV_WC_LOC_QP_OP_ERR:
	case IBV_WC_MW_BIND_ERR:
	case IBV_WC_REM_INV_REQ_ERR:
	case IBV_WC_REM_INV_RD_REQ_ERR:
		return -EINVAL;
	case IBV_WC_LOC_EEC_OP_ERR:
	case IBV_WC_LOC_RDD_VIOL_ERR:
	case IBV_WC_INV_EECN_ERR:
	case IBV_WC_INV_EEC_STATE_ERR:
	case IBV_WC_FATAL_ERR:
	case IBV_WC_GENERAL_ERR:
		return -EIO;
	case IBV_WC_LOC_PROT_ERR:
	case IBV_WC_LOC_ACCESS_ERR:
		return -EFAULT; /* our own lkey or buffer is wrong */
	case IBV_WC_WR_FLUSH_ERR:
		return -ECONNRESET;
	case IBV_WC_BAD_RESP_ERR:
		return -EPROTO;
	case IBV_WC_REM_ACCESS_ERR:
		return -EACCES;
	case IBV_WC_REM_OP_ERR:
		return -EREMOTEIO;
	case IBV_WC_RETRY_EXC_ERR:
	case IBV_WC_RESP_TIMEOUT_ERR:
		return -ETIMEDOUT;
	case IBV_WC_RNR_RETRY_EXC_ERR:
		return -ENOBUFS; /* the peer had no receive posted */
	case IBV_WC_REM_ABORT_ERR:
		return -ECONNABORTED;
	case IBV_WC_TM_ERR:
	case IBV_WC_TM_RNDV_INCOMPLETE:
		return -EIO;
	}
	return -EIO;
}

const char *cn_verbs_status_str(int wc_status)
{
	return ibv_wc_status_str((enum ibv_wc_status)wc_status);
}

static void why_set(char *why, size_t whylen, const char *fmt, const char *a, const char *b)
{
	if (why != NULL && whylen > 0)
		snprintf(why, whylen, fmt, a, b);
}

int cn_verbs_available(const char *dev, char *why, size_t whylen)
{
	struct ibv_device **list;
	int num = 0, i, rc = -ENODEV, found = 0;

	errno = 0;
	list = ibv_get_device_list(&num);
	if (list == NULL) {
		why_set(why, whylen, "libibverbs cannot list RDMA devices: %s%s", strerror(errno),
			" (no RDMA support in this kernel?)");
		return -ENODEV;
	}
	for (i = 0; i < num && rc != 0; i++) {
		const char *name = ibv_get_device_name(list[i]);
		struct ibv_context *ctx;
		struct ibv_device_attr attr;
		uint8_t p;

		if (dev != NULL && strcmp(dev, name) != 0)
			continue;
		found++;
		ctx = ibv_open_device(list[i]);
		if (ctx == NULL)
			continue;
		if (ibv_query_device(ctx, &attr) == 0) {
			for (p = 1; p <= attr.phys_port_cnt && rc != 0; p++) {
				struct ibv_port_attr pa;

				if (ibv_query_port(ctx, p, &pa) == 0 &&
				    pa.state == IBV_PORT_ACTIVE)
					rc = 0;
			}
		}
		ibv_close_device(ctx);
	}
	ibv_free_device_list(list);
	if (rc == 0)
		return 0;
	if (num == 0)
		why_set(why, whylen, "no RDMA device found%s%s",
			" (libibverbs lists none: no RDMA NIC, and no soft-RoCE link;",
			" `rdma link add rxe0 type rxe netdev IFACE` creates one)");
	else if (dev != NULL && found == 0)
		why_set(why, whylen, "RDMA device '%s' not found%s", dev,
			" (ibv_devices lists the names)");
	else
		why_set(why, whylen, "no usable RDMA device%s%s", dev ? " named " : "",
			dev ? dev : ": none opens with an ACTIVE port");
	return -ENODEV;
}

/* ---- protection domains ---- */

static int pd_create(struct ibv_context *ctx, struct cn_verbs_pd **out)
{
	struct cn_verbs_pd *pd;
	int rc;

	pd = calloc(1, sizeof(*pd));
	if (pd == NULL)
		return -ENOMEM;
	pd->ctx = ctx;
	rc = ibv_query_device(ctx, &pd->attr);
	if (rc != 0) {
		rc = -rc;
		goto free_pd;
	}
	errno = 0;
	pd->pd = ibv_alloc_pd(ctx);
	if (pd->pd == NULL) {
		rc = neg_errno(ENOMEM);
		goto free_pd;
	}
	pd->refs = 1;
	*out = pd;
	return 0;

free_pd:
	free(pd);
	return rc;
}

static struct cn_verbs_pd *pd_get(struct cn_verbs_pd *pd)
{
	__atomic_add_fetch(&pd->refs, 1, __ATOMIC_RELAXED);
	return pd;
}

static void pd_put(struct cn_verbs_pd **pdp)
{
	struct cn_verbs_pd *pd = *pdp;

	*pdp = NULL;
	if (pd == NULL || __atomic_sub_fetch(&pd->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	ibv_dealloc_pd(pd->pd);
	free(pd);
}

/* ---- memory ---- */

/* CN_VERBS_ACCESS_* -> IBV_ACCESS_*, or -EINVAL. */
static int access_of(unsigned access)
{
	int ia = 0;

	if ((access & ~(CN_VERBS_ACCESS_LOCAL_WRITE | CN_VERBS_ACCESS_REMOTE_READ |
			CN_VERBS_ACCESS_REMOTE_WRITE)) != 0)
		return -EINVAL;
	if ((access & CN_VERBS_ACCESS_REMOTE_WRITE) && !(access & CN_VERBS_ACCESS_LOCAL_WRITE))
		return -EINVAL;
	if (access & CN_VERBS_ACCESS_LOCAL_WRITE)
		ia |= IBV_ACCESS_LOCAL_WRITE;
	if (access & CN_VERBS_ACCESS_REMOTE_READ)
		ia |= IBV_ACCESS_REMOTE_READ;
	if (access & CN_VERBS_ACCESS_REMOTE_WRITE)
		ia |= IBV_ACCESS_REMOTE_WRITE;
	return ia;
}

int cn_verbs_reg_dmabuf(struct cn_verbs_pd *pd, int fd, uint64_t offset, size_t len, void *iova,
			unsigned access, struct cn_verbs_mr **out)
{
	struct cn_verbs_mr *mr;
	int ia = access_of(access), rc;

	if (pd == NULL || fd < 0 || iova == NULL || len == 0 || out == NULL || ia < 0)
		return -EINVAL;
	mr = calloc(1, sizeof(*mr));
	if (mr == NULL)
		return -ENOMEM;
	errno = 0;
	mr->ibmr = ibv_reg_dmabuf_mr(pd->pd, offset, len, (uint64_t)(uintptr_t)iova, fd, ia);
	if (mr->ibmr == NULL) {
		rc = neg_errno(EOPNOTSUPP);
		free(mr);
		return rc;
	}
	mr->addr = iova;
	mr->len = len;
	mr->lkey = mr->ibmr->lkey;
	mr->rkey = mr->ibmr->rkey;
	mr->pd = pd_get(pd);
	*out = mr;
	return 0;
}

int cn_verbs_reg(struct cn_verbs_pd *pd, void *addr, size_t len, unsigned access,
		 struct cn_verbs_mr **out)
{
	struct cn_verbs_mr *mr;
	int ia = access_of(access), rc;

	if (pd == NULL || addr == NULL || len == 0 || out == NULL || ia < 0)
		return -EINVAL;
	mr = calloc(1, sizeof(*mr));
	if (mr == NULL)
		return -ENOMEM;
	errno = 0;
	mr->ibmr = ibv_reg_mr(pd->pd, addr, len, ia);
	if (mr->ibmr == NULL) {
		rc = neg_errno(ENOMEM);
		free(mr);
		return rc;
	}
	mr->addr = addr;
	mr->len = len;
	mr->lkey = mr->ibmr->lkey;
	mr->rkey = mr->ibmr->rkey;
	mr->pd = pd_get(pd);
	*out = mr;
	return 0;
}

void cn_verbs_dereg(struct cn_verbs_mr **mrp)
{
	struct cn_verbs_mr *mr;

	if (mrp == NULL || *mrp == NULL)
		return;
	mr = *mrp;
	*mrp = NULL;
	ibv_dereg_mr(mr->ibmr);
	pd_put(&mr->pd);
	free(mr);
}

/* ---- connections: setup and teardown ---- */

/* @cfg with defaults filled in; dev is left as given. */
static struct cn_verbs_cfg cfg_resolve(const struct cn_verbs_cfg *cfg)
{
	struct cn_verbs_cfg r = {0};

	if (cfg != NULL)
		r = *cfg;
	if (r.sq_depth == 0)
		r.sq_depth = CN_VERBS_SQ_DEPTH;
	if (r.nrecv == 0)
		r.nrecv = CN_VERBS_NRECV;
	if (r.nsend == 0)
		r.nsend = CN_VERBS_NSEND;
	if (r.msg_size == 0)
		r.msg_size = CN_VERBS_MSG_SIZE;
	if (r.spin_us == 0)
		r.spin_us = CN_VERBS_SPIN_US;
	if (r.timeout_ms <= 0)
		r.timeout_ms = VERBS_DEFAULT_TIMEOUT_MS;
	return r;
}

static unsigned umin(unsigned a, unsigned b)
{
	return a < b ? a : b;
}

static void conn_fail(struct cn_verbs_conn *c, int err)
{
	if (c->err == 0)
		c->err = err;
}

static int post_recv(struct cn_verbs_conn *c, uint32_t idx)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(c->rbufs + (size_t)idx * c->caps.msg_size),
		.length = c->caps.msg_size,
		.lkey = c->rmr->lkey,
	};
	struct ibv_recv_wr wr = {.wr_id = idx, .sg_list = &sge, .num_sge = 1}, *bad;
	int r = ibv_post_recv(c->qp, &wr, &bad);

	if (r != 0)
		return -r;
	c->rlent[idx] = 0;
	return 0;
}

/* Peer address of @id as "HOST:PORT" into @buf. */
static void peer_name(struct rdma_cm_id *id, char *buf, size_t len)
{
	struct sockaddr *sa = rdma_get_peer_addr(id);
	char host[64] = "?", serv[16] = "?";
	socklen_t sl = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
						 : sizeof(struct sockaddr_in);

	getnameinfo(sa, sl, host, sizeof(host), serv, sizeof(serv),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(buf, len, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/*
 * Create the CQs, the QP (on c->id, with c->pd) and the control buffers, and
 * post every receive. On failure the caller frees the half-built connection
 * with conn_free(), which undoes whatever exists.
 */
static int conn_setup(struct cn_verbs_conn *c, const struct cn_verbs_cfg *cfg)
{
	const struct ibv_device_attr *da = &c->pd->attr;
	struct ibv_qp_init_attr qa;
	struct ibv_port_attr pa;
	struct ibv_context *ctx = c->pd->ctx;
	unsigned depth, nrecv, i;
	size_t rlen, slen;
	int rc;

	depth = umin(umin(cfg->sq_depth, (unsigned)da->max_qp_wr), (unsigned)da->max_cqe);
	nrecv = umin(umin(cfg->nrecv, (unsigned)da->max_qp_wr), (unsigned)da->max_cqe);
	c->caps.sq_depth = depth;
	c->caps.nrecv = nrecv;
	c->caps.nsend = cfg->nsend;
	c->caps.msg_size = cfg->msg_size;
	c->caps.rd_atomic = umin(CN_VERBS_RD_ATOM, (unsigned)da->max_qp_init_rd_atom);
	snprintf(c->caps.dev, sizeof(c->caps.dev), "%s", ibv_get_device_name(ctx->device));
	c->caps.max_msg_size = (1u << 31);
	if (ibv_query_port(ctx, c->id->port_num, &pa) == 0)
		c->caps.max_msg_size = pa.max_msg_sz;
	c->spin_us = cfg->spin_us;

	errno = 0;
	c->comp_ch = ibv_create_comp_channel(ctx);
	if (c->comp_ch == NULL)
		return neg_errno(ENOMEM);
	rc = set_nonblock(c->comp_ch->fd);
	if (rc != 0)
		return rc;
	c->scq = ibv_create_cq(ctx, (int)depth, c, c->comp_ch, 0);
	if (c->scq == NULL)
		return neg_errno(ENOMEM);
	c->rcq = ibv_create_cq(ctx, (int)nrecv, c, c->comp_ch, 0);
	if (c->rcq == NULL)
		return neg_errno(ENOMEM);

	memset(&qa, 0, sizeof(qa));
	qa.qp_context = c;
	qa.send_cq = c->scq;
	qa.recv_cq = c->rcq;
	qa.qp_type = IBV_QPT_RC;
	qa.sq_sig_all = 0;
	qa.cap.max_send_wr = depth;
	qa.cap.max_recv_wr = nrecv;
	qa.cap.max_send_sge = 1;
	qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(c->id, c->pd->pd, &qa) != 0)
		return neg_errno(ENOMEM);
	c->qp = c->id->qp;

	c->slots = calloc(depth, sizeof(*c->slots));
	c->wrs = calloc(depth, sizeof(*c->wrs));
	c->sges = calloc(depth, sizeof(*c->sges));
	c->rlent = calloc(nrecv, 1);
	c->sfree = calloc(cfg->nsend, sizeof(*c->sfree));
	rlen = (size_t)nrecv * cfg->msg_size;
	slen = (size_t)cfg->nsend * cfg->msg_size;
	c->rbufs = aligned_alloc(4096, (rlen + 4095) & ~(size_t)4095);
	c->sbufs = aligned_alloc(4096, (slen + 4095) & ~(size_t)4095);
	if (!c->slots || !c->wrs || !c->sges || !c->rlent || !c->sfree || !c->rbufs || !c->sbufs)
		return -ENOMEM;
	errno = 0;
	c->rmr = ibv_reg_mr(c->pd->pd, c->rbufs, rlen, IBV_ACCESS_LOCAL_WRITE);
	if (c->rmr == NULL)
		return neg_errno(ENOMEM);
	c->smr = ibv_reg_mr(c->pd->pd, c->sbufs, slen, 0);
	if (c->smr == NULL)
		return neg_errno(ENOMEM);
	for (i = 0; i < cfg->nsend; i++)
		c->sfree[i] = cfg->nsend - 1 - i;
	c->nsfree = cfg->nsend;
	for (i = 0; i < nrecv; i++) {
		rc = post_recv(c, i);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* Free a connection in any state of construction. */
static void conn_free(struct cn_verbs_conn *c)
{
	if (c->id != NULL && c->id->qp != NULL)
		rdma_destroy_qp(c->id);
	if (c->scq != NULL)
		ibv_destroy_cq(c->scq);
	if (c->rcq != NULL)
		ibv_destroy_cq(c->rcq);
	if (c->comp_ch != NULL)
		ibv_destroy_comp_channel(c->comp_ch);
	if (c->rmr != NULL)
		ibv_dereg_mr(c->rmr);
	if (c->smr != NULL)
		ibv_dereg_mr(c->smr);
	free(c->rbufs);
	free(c->sbufs);
	free(c->sfree);
	free(c->rlent);
	free(c->sges);
	free(c->wrs);
	free(c->slots);
	if (c->id != NULL)
		rdma_destroy_id(c->id);
	if (c->cm_ch != NULL)
		rdma_destroy_event_channel(c->cm_ch);
	pd_put(&c->pd);
	free(c);
}

void cn_verbs_conn_destroy(struct cn_verbs_conn **cp)
{
	struct cn_verbs_conn *c;

	if (cp == NULL || *cp == NULL)
		return;
	c = *cp;
	*cp = NULL;
	if (c->established)
		rdma_disconnect(c->id);
	conn_free(c);
}

/*
 * Wait for the next CM event on @ch (non-blocking fd) until @deadline.
 * Returns 0 with *ev (the caller acks it), -ETIMEDOUT, or -errno.
 */
static int cm_wait(struct rdma_event_channel *ch, uint64_t deadline, struct rdma_cm_event **ev)
{
	for (;;) {
		struct pollfd pfd = {.fd = ch->fd, .events = POLLIN};
		int r;

		if (rdma_get_cm_event(ch, ev) == 0)
			return 0;
		if (errno != EAGAIN && errno != EINTR)
			return neg_errno(EIO);
		r = poll(&pfd, 1, ms_left(deadline));
		if (r == 0)
			return -ETIMEDOUT;
		if (r < 0 && errno != EINTR)
			return neg_errno(EIO);
	}
}

/* Map a failed CM step: the event that came instead of the one expected. */
static int cm_event_errno(const struct rdma_cm_event *ev)
{
	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_ERROR:
		return ev->status < 0 ? ev->status : -EHOSTUNREACH;
	case RDMA_CM_EVENT_ROUTE_ERROR:
		return ev->status < 0 ? ev->status : -ENETUNREACH;
	case RDMA_CM_EVENT_UNREACHABLE:
		return ev->status < 0 ? ev->status : -EHOSTUNREACH;
	case RDMA_CM_EVENT_REJECTED:
	case RDMA_CM_EVENT_CONNECT_ERROR:
		return -ECONNREFUSED;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		return -ENODEV;
	case RDMA_CM_EVENT_DISCONNECTED:
		return -ECONNRESET;
	default:
		return -EPROTO;
	}
}

/* Wait for @want on @ch for @id; any other event for @id is an error. */
static int cm_expect(struct rdma_event_channel *ch, enum rdma_cm_event_type want,
		     uint64_t deadline, struct rdma_conn_param *param)
{
	struct rdma_cm_event *ev;
	int rc = cm_wait(ch, deadline, &ev);

	if (rc != 0)
		return rc;
	rc = ev->event == want ? 0 : cm_event_errno(ev);
	if (rc == 0 && param != NULL)
		*param = ev->param.conn;
	rdma_ack_cm_event(ev);
	return rc;
}

/* Handle pending CM events of an established connection (non-blocking). */
static void cm_check(struct cn_verbs_conn *c)
{
	struct rdma_cm_event *ev;

	while (rdma_get_cm_event(c->cm_ch, &ev) == 0) {
		int err = 0;

		if (ev->event == RDMA_CM_EVENT_DISCONNECTED)
			err = -ECONNRESET;
		else if (ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL)
			err = -ENODEV;
		rdma_ack_cm_event(ev);
		if (err != 0) {
			struct ibv_qp_attr qa = {.qp_state = IBV_QPS_ERR};

			conn_fail(c, err);
			/* flush what is outstanding so its buffers come back */
			ibv_modify_qp(c->qp, &qa, IBV_QP_STATE);
		}
	}
}

static int resolve(const char *addr, bool passive, struct addrinfo **res)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
	char host[256], port[8];
	uint16_t p;
	int rc;

	rc = cn_parse_hostport(addr, host, sizeof(host), &p);
	if (rc != 0)
		return rc;
	snprintf(port, sizeof(port), "%u", p);
	rc = getaddrinfo(host, port, &hints, res);
	if (rc != 0)
		return rc == EAI_SYSTEM ? neg_errno(EINVAL) : -EINVAL;
	return 0;
}

static struct rdma_event_channel *event_channel(int *rc)
{
	struct rdma_event_channel *ch;

	errno = 0;
	ch = rdma_create_event_channel();
	if (ch == NULL) {
		/* no /dev/infiniband/rdma_cm: no RDMA support here */
		*rc = (errno == ENOENT || errno == ENODEV || errno == ENXIO) ? -ENODEV
									   : neg_errno(EIO);
		return NULL;
	}
	*rc = set_nonblock(ch->fd);
	if (*rc != 0) {
		rdma_destroy_event_channel(ch);
		return NULL;
	}
	return ch;
}

/* Our side of the connection parameters; @peer (accept) bounds the RDMA READ depths. */
static void conn_param(const struct cn_verbs_conn *c, const struct rdma_conn_param *peer,
		       struct rdma_conn_param *p)
{
	const struct ibv_device_attr *da = &c->pd->attr;
	unsigned resp = umin(CN_VERBS_RD_ATOM, (unsigned)da->max_qp_rd_atom);
	unsigned init = umin(CN_VERBS_RD_ATOM, (unsigned)da->max_qp_init_rd_atom);

	if (peer != NULL) {
		resp = umin(resp, peer->initiator_depth);
		init = umin(init, peer->responder_resources);
	}
	memset(p, 0, sizeof(*p));
	p->responder_resources = (uint8_t)resp;
	p->initiator_depth = (uint8_t)init;
	p->retry_count = 7;
	p->rnr_retry_count = 7; /* infinite: a receiver is only briefly without buffers */
}

/* ---- listener ---- */

int cn_verbs_listen(const char *addr, const struct cn_verbs_cfg *cfg,
		    struct cn_verbs_listener **out)
{
	struct cn_verbs_listener *l;
	struct addrinfo *ai = NULL;
	struct ibv_context *ctx;
	int rc;

	if (addr == NULL || out == NULL)
		return -EINVAL;
	l = calloc(1, sizeof(*l));
	if (l == NULL)
		return -ENOMEM;
	l->cfg = cfg_resolve(cfg);
	if (l->cfg.dev != NULL) {
		snprintf(l->dev, sizeof(l->dev), "%s", l->cfg.dev);
		l->cfg.dev = l->dev;
	}
	rc = resolve(addr, true, &ai);
	if (rc != 0)
		goto free_l;
	l->ch = event_channel(&rc);
	if (l->ch == NULL)
		goto free_ai;
	if (rdma_create_id(l->ch, &l->id, l, RDMA_PS_TCP) != 0) {
		rc = neg_errno(ENOMEM);
		goto destroy_ch;
	}
	if (rdma_bind_addr(l->id, ai->ai_addr) != 0) {
		rc = neg_errno(EADDRNOTAVAIL);
		goto destroy_id;
	}
	ctx = l->id->verbs;
	if (ctx == NULL) {
		/* wildcard address: the named device, or the first one */
		struct ibv_context **devs = rdma_get_devices(NULL);
		int i;

		for (i = 0; devs != NULL && devs[i] != NULL; i++) {
			if (l->cfg.dev == NULL ||
			    strcmp(ibv_get_device_name(devs[i]->device), l->cfg.dev) == 0) {
				ctx = devs[i];
				break;
			}
		}
		if (devs != NULL)
			rdma_free_devices(devs);
	}
	if (ctx == NULL || (l->cfg.dev != NULL &&
			    strcmp(ibv_get_device_name(ctx->device), l->cfg.dev) != 0)) {
		rc = -ENODEV;
		goto destroy_id;
	}
	rc = pd_create(ctx, &l->pd);
	if (rc != 0)
		goto destroy_id;
	if (rdma_listen(l->id, 64) != 0) {
		rc = neg_errno(EIO);
		goto put_pd;
	}
	l->port = ntohs(rdma_get_src_port(l->id));
	freeaddrinfo(ai);
	*out = l;
	return 0;

put_pd:
	pd_put(&l->pd);
destroy_id:
	rdma_destroy_id(l->id);
destroy_ch:
	rdma_destroy_event_channel(l->ch);
free_ai:
	freeaddrinfo(ai);
free_l:
	free(l);
	return rc;
}

int cn_verbs_listener_fd(const struct cn_verbs_listener *l)
{
	return l->ch->fd;
}

uint16_t cn_verbs_listener_port(const struct cn_verbs_listener *l)
{
	return l->port;
}

void cn_verbs_listener_ident(const struct cn_verbs_listener *l, char *dev, size_t devlen,
			     char *gid, size_t gidlen)
{
	static const uint8_t zero[16];
	const uint8_t *raw;

	snprintf(dev, devlen, "%s",
		 l->pd != NULL && l->pd->ctx != NULL ? ibv_get_device_name(l->pd->ctx->device) : "");
	if (gidlen > 0)
		gid[0] = '\0';
	/* rdma_bind_addr() filled the source GID when the address named one port */
	if (l->id == NULL || l->id->verbs == NULL || gidlen < INET6_ADDRSTRLEN)
		return;
	raw = l->id->route.addr.addr.ibaddr.sgid.raw;
	if (memcmp(raw, zero, sizeof(zero)) != 0 &&
	    inet_ntop(AF_INET6, raw, gid, (socklen_t)gidlen) == NULL)
		gid[0] = '\0';
}

struct cn_verbs_pd *cn_verbs_listener_pd(struct cn_verbs_listener *l)
{
	return l->pd;
}

void cn_verbs_listener_destroy(struct cn_verbs_listener **lp)
{
	struct cn_verbs_listener *l;

	if (lp == NULL || *lp == NULL)
		return;
	l = *lp;
	*lp = NULL;
	rdma_destroy_id(l->id);
	rdma_destroy_event_channel(l->ch);
	pd_put(&l->pd);
	free(l);
}

/*
 * Take the connection request @id (its event already acked): give it a CM
 * channel of its own, build the QP on the listener's PD, accept, and wait
 * for ESTABLISHED. On failure the request is rejected and freed.
 */
static int accept_one(struct cn_verbs_listener *l, struct rdma_cm_id *id,
		      const struct rdma_conn_param *req, struct cn_verbs_conn **out)
{
	struct rdma_conn_param p;
	struct cn_verbs_conn *c;
	bool accepted = false;
	int rc;

	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		rdma_reject(id, NULL, 0);
		rdma_destroy_id(id);
		return -ENOMEM;
	}
	c->cm_ch = event_channel(&rc);
	if (c->cm_ch == NULL || rdma_migrate_id(id, c->cm_ch) != 0) {
		if (c->cm_ch != NULL)
			rc = neg_errno(EIO);
		rdma_reject(id, NULL, 0);
		rdma_destroy_id(id);
		conn_free(c);
		return rc;
	}
	c->id = id;
	if (id->verbs != l->pd->ctx) {
		rc = -EXDEV; /* arrived on another device than the listener's PD */
		goto fail;
	}
	c->pd = pd_get(l->pd);
	peer_name(id, c->peer, sizeof(c->peer));
	rc = conn_setup(c, &l->cfg);
	if (rc != 0)
		goto fail;
	conn_param(c, req, &p);
	c->caps.rd_atomic = p.initiator_depth;
	if (rdma_accept(id, &p) != 0) {
		rc = neg_errno(EIO);
		goto fail;
	}
	accepted = true;
	rc = cm_expect(c->cm_ch, RDMA_CM_EVENT_ESTABLISHED, deadline_of(l->cfg.timeout_ms), NULL);
	if (rc != 0)
		goto fail;
	c->established = true;
	*out = c;
	return 0;

fail:
	if (!accepted)
		rdma_reject(id, NULL, 0);
	conn_free(c);
	return rc;
}

int cn_verbs_accept(struct cn_verbs_listener *l, int timeout_ms, struct cn_verbs_conn **out)
{
	uint64_t deadline = deadline_of(timeout_ms);

	if (l == NULL || out == NULL)
		return -EINVAL;
	for (;;) {
		struct rdma_cm_event *ev;
		struct rdma_conn_param req;
		struct rdma_cm_id *id;
		int rc = cm_wait(l->ch, deadline, &ev);

		if (rc != 0)
			return rc;
		if (ev->event != RDMA_CM_EVENT_CONNECT_REQUEST) {
			rc = ev->event == RDMA_CM_EVENT_DEVICE_REMOVAL ? -ENODEV : 0;
			rdma_ack_cm_event(ev);
			if (rc != 0)
				return rc;
			continue;
		}
		id = ev->id;
		req = ev->param.conn;
		rdma_ack_cm_event(ev);
		return accept_one(l, id, &req, out);
	}
}

/* ---- client ---- */

int cn_verbs_connect(const char *addr, const struct cn_verbs_cfg *ucfg,
		     struct cn_verbs_conn **out)
{
	struct cn_verbs_cfg cfg = cfg_resolve(ucfg);
	struct rdma_conn_param p, got;
	struct cn_verbs_conn *c;
	struct addrinfo *ai = NULL;
	uint64_t deadline = deadline_of(cfg.timeout_ms);
	int rc;

	if (addr == NULL || out == NULL)
		return -EINVAL;
	rc = resolve(addr, false, &ai);
	if (rc != 0)
		return rc;
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		freeaddrinfo(ai);
		return -ENOMEM;
	}
	c->cm_ch = event_channel(&rc);
	if (c->cm_ch == NULL)
		goto fail;
	if (rdma_create_id(c->cm_ch, &c->id, c, RDMA_PS_TCP) != 0) {
		rc = neg_errno(ENOMEM);
		goto fail;
	}
	if (rdma_resolve_addr(c->id, NULL, ai->ai_addr, ms_left(deadline)) != 0) {
		rc = neg_errno(EHOSTUNREACH);
		goto fail;
	}
	rc = cm_expect(c->cm_ch, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, NULL);
	if (rc != 0)
		goto fail;
	if (cfg.dev != NULL && strcmp(ibv_get_device_name(c->id->verbs->device), cfg.dev) != 0) {
		rc = -ENODEV;
		goto fail;
	}
	rc = pd_create(c->id->verbs, &c->pd);
	if (rc != 0)
		goto fail;
	if (rdma_resolve_route(c->id, ms_left(deadline)) != 0) {
		rc = neg_errno(ENETUNREACH);
		goto fail;
	}
	rc = cm_expect(c->cm_ch, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, NULL);
	if (rc != 0)
		goto fail;
	rc = conn_setup(c, &cfg);
	if (rc != 0)
		goto fail;
	conn_param(c, NULL, &p);
	if (rdma_connect(c->id, &p) != 0) {
		rc = neg_errno(ECONNREFUSED);
		goto fail;
	}
	rc = cm_expect(c->cm_ch, RDMA_CM_EVENT_ESTABLISHED, deadline, &got);
	if (rc != 0)
		goto fail;
	c->established = true;
	c->caps.rd_atomic = p.initiator_depth;
	if (got.responder_resources != 0)
		c->caps.rd_atomic = umin(c->caps.rd_atomic, got.responder_resources);
	peer_name(c->id, c->peer, sizeof(c->peer));
	freeaddrinfo(ai);
	*out = c;
	return 0;

fail:
	freeaddrinfo(ai);
	conn_free(c);
	return rc;
}

struct cn_verbs_pd *cn_verbs_conn_pd(struct cn_verbs_conn *c)
{
	return c->pd;
}

void cn_verbs_conn_caps(const struct cn_verbs_conn *c, struct cn_verbs_caps *caps)
{
	*caps = c->caps;
}

const char *cn_verbs_conn_peer(const struct cn_verbs_conn *c)
{
	return c->peer;
}

int cn_verbs_conn_error(const struct cn_verbs_conn *c)
{
	return c->err;
}

/* ---- data path ---- */

unsigned cn_verbs_sq_free(const struct cn_verbs_conn *c)
{
	return c->caps.sq_depth - (unsigned)(c->sq_head - c->sq_tail);
}

/* Signal this WR? Forces one when the unsignaled run reaches half the queue. */
static bool sq_signal(struct cn_verbs_conn *c, bool want)
{
	if (want || c->unsig_run + 1 >= c->caps.sq_depth / 2) {
		c->unsig_run = 0;
		return true;
	}
	c->unsig_run++;
	return false;
}

/*
 * Post the chain c->wrs[0..n-1] whose slots are filled. A failure after part
 * of the chain went out breaks the connection (the posted part still
 * completes, with flush errors, and is accounted for).
 */
static int sq_post(struct cn_verbs_conn *c, unsigned n, unsigned run_before)
{
	struct ibv_send_wr *bad = NULL;
	int r = ibv_post_send(c->qp, c->wrs, &bad);

	if (r == 0) {
		c->sq_head += n;
		return 0;
	}
	if (bad != NULL && bad != c->wrs) {
		c->sq_head += (uint64_t)(bad - c->wrs);
		conn_fail(c, -r);
	} else {
		c->unsig_run = run_before;
	}
	return -r;
}

int cn_verbs_post_rdma(struct cn_verbs_conn *c, const struct cn_verbs_rdma *ops, unsigned n)
{
	unsigned i, run_before = c->unsig_run;

	if (c->err != 0)
		return c->err;
	if (n == 0)
		return 0;
	if (n > c->caps.sq_depth)
		return -EINVAL;
	if (n > cn_verbs_sq_free(c))
		return -EAGAIN;
	for (i = 0; i < n; i++) {
		uint64_t seq = c->sq_head + i;
		struct sq_slot *s = &c->slots[seq % c->caps.sq_depth];
		struct ibv_send_wr *wr = &c->wrs[i];
		struct ibv_sge *sge = &c->sges[i];

		s->wr_id = ops[i].wr_id;
		s->sendbuf = -1;
		s->op = ops[i].read ? CN_VERBS_WC_READ : CN_VERBS_WC_WRITE;
		s->report = ops[i].signaled;
		sge->addr = (uintptr_t)ops[i].local;
		sge->length = ops[i].len;
		sge->lkey = ops[i].lkey;
		memset(wr, 0, sizeof(*wr));
		wr->wr_id = seq;
		wr->sg_list = sge;
		wr->num_sge = 1;
		wr->opcode = ops[i].read ? IBV_WR_RDMA_READ : IBV_WR_RDMA_WRITE;
		wr->send_flags = sq_signal(c, ops[i].signaled) ? IBV_SEND_SIGNALED : 0;
		wr->wr.rdma.remote_addr = ops[i].remote_addr;
		wr->wr.rdma.rkey = ops[i].rkey;
		wr->next = i + 1 < n ? &c->wrs[i + 1] : NULL;
	}
	return sq_post(c, n, run_before);
}

int cn_verbs_post_write(struct cn_verbs_conn *c, void *local, uint32_t lkey,
			uint64_t remote_addr, uint32_t rkey, uint32_t len, bool signaled,
			uint64_t wr_id)
{
	struct cn_verbs_rdma op = {.read = false, .signaled = signaled, .local = local,
				   .lkey = lkey, .len = len, .remote_addr = remote_addr,
				   .rkey = rkey, .wr_id = wr_id};

	return cn_verbs_post_rdma(c, &op, 1);
}

int cn_verbs_post_read(struct cn_verbs_conn *c, void *local, uint32_t lkey,
		       uint64_t remote_addr, uint32_t rkey, uint32_t len, bool signaled,
		       uint64_t wr_id)
{
	struct cn_verbs_rdma op = {.read = true, .signaled = signaled, .local = local,
				   .lkey = lkey, .len = len, .remote_addr = remote_addr,
				   .rkey = rkey, .wr_id = wr_id};

	return cn_verbs_post_rdma(c, &op, 1);
}

int cn_verbs_post_send(struct cn_verbs_conn *c, const void *buf, size_t len)
{
	uint64_t seq = c->sq_head;
	struct sq_slot *s;
	struct ibv_send_wr *wr = &c->wrs[0];
	struct ibv_sge *sge = &c->sges[0];
	unsigned run_before = c->unsig_run;
	uint32_t idx;
	int rc;

	if (c->err != 0)
		return c->err;
	if (len == 0 || len > c->caps.msg_size)
		return -EMSGSIZE;
	if (c->nsfree == 0 || cn_verbs_sq_free(c) == 0)
		return -EAGAIN;
	idx = c->sfree[--c->nsfree];
	memcpy(c->sbufs + (size_t)idx * c->caps.msg_size, buf, len);
	s = &c->slots[seq % c->caps.sq_depth];
	s->wr_id = 0;
	s->sendbuf = (int32_t)idx;
	s->op = CN_VERBS_WC_SEND;
	s->report = 0;
	sge->addr = (uintptr_t)(c->sbufs + (size_t)idx * c->caps.msg_size);
	sge->length = (uint32_t)len;
	sge->lkey = c->smr->lkey;
	memset(wr, 0, sizeof(*wr));
	wr->wr_id = seq;
	wr->sg_list = sge;
	wr->num_sge = 1;
	wr->opcode = IBV_WR_SEND;
	/* signaled so its buffer comes back even if nothing follows */
	wr->send_flags = sq_signal(c, true) ? IBV_SEND_SIGNALED : 0;
	rc = sq_post(c, 1, run_before);
	if (rc != 0 && c->sq_head == seq)
		c->sfree[c->nsfree++] = idx;
	return rc;
}

int cn_verbs_recv_release(struct cn_verbs_conn *c, uint64_t wr_id)
{
	if (wr_id >= c->caps.nrecv || !c->rlent[wr_id])
		return -EINVAL;
	if (c->err != 0)
		return c->err;
	return post_recv(c, (uint32_t)wr_id);
}

/* A send-CQ completion: retire WRs up to it; returns 1 when @out is to be reported. */
static int on_send_wc(struct cn_verbs_conn *c, const struct ibv_wc *w, struct cn_verbs_wc *out)
{
	uint64_t seq = w->wr_id;
	struct sq_slot s = c->slots[seq % c->caps.sq_depth];
	int st = cn_verbs_status_errno(w->status);

	if (st != 0)
		conn_fail(c, st);
	for (; c->sq_tail <= seq && c->sq_tail < c->sq_head; c->sq_tail++) {
		struct sq_slot *t = &c->slots[c->sq_tail % c->caps.sq_depth];

		if (t->sendbuf >= 0) {
			c->sfree[c->nsfree++] = (uint32_t)t->sendbuf;
			t->sendbuf = -1;
		}
	}
	if (s.op == CN_VERBS_WC_SEND || (st == 0 && !s.report))
		return 0;
	out->wr_id = s.wr_id;
	out->status = st;
	out->wc_status = w->status;
	out->op = (enum cn_verbs_wc_op)s.op;
	out->byte_len = 0;
	out->data = NULL;
	return 1;
}

static int on_recv_wc(struct cn_verbs_conn *c, const struct ibv_wc *w, struct cn_verbs_wc *out)
{
	int st = cn_verbs_status_errno(w->status);

	if (w->wr_id >= c->caps.nrecv)
		return 0;
	c->rlent[w->wr_id] = 1;
	if (st != 0) {
		conn_fail(c, st);
		if (st == -ECONNRESET)
			return 0; /* flushed: nothing for the caller */
	}
	out->wr_id = w->wr_id;
	out->status = st;
	out->wc_status = w->status;
	out->op = CN_VERBS_WC_RECV;
	out->byte_len = st == 0 ? w->byte_len : 0;
	out->data = st == 0 ? c->rbufs + w->wr_id * c->caps.msg_size : NULL;
	return 1;
}

static int drain_cq(struct cn_verbs_conn *c, struct ibv_cq *cq, struct cn_verbs_wc *wc, int max,
		    int n)
{
	struct ibv_wc w[VERBS_POLL_BATCH];

	while (n < max) {
		int want = max - n < VERBS_POLL_BATCH ? max - n : VERBS_POLL_BATCH;
		int k = ibv_poll_cq(cq, want, w), i;

		if (k < 0) {
			conn_fail(c, -EIO);
			break;
		}
		for (i = 0; i < k; i++)
			n += cq == c->scq ? on_send_wc(c, &w[i], &wc[n]) : on_recv_wc(c, &w[i], &wc[n]);
		if (k < want)
			break;
	}
	return n;
}

static int drain(struct cn_verbs_conn *c, struct cn_verbs_wc *wc, int max)
{
	int n = drain_cq(c, c->scq, wc, max, 0);

	return drain_cq(c, c->rcq, wc, max, n);
}

/* Sleep on the completion and CM channels until something arrives or @deadline. */
static int wait_events(struct cn_verbs_conn *c, uint64_t deadline)
{
	struct pollfd pfd[2] = {{.fd = c->comp_ch->fd, .events = POLLIN},
				{.fd = c->cm_ch->fd, .events = POLLIN}};
	int r = poll(pfd, 2, ms_left(deadline));

	if (r < 0)
		return errno == EINTR ? 0 : neg_errno(EIO);
	if (pfd[0].revents) {
		struct ibv_cq *cq;
		void *ctx;

		while (ibv_get_cq_event(c->comp_ch, &cq, &ctx) == 0)
			ibv_ack_cq_events(cq, 1);
	}
	if (pfd[1].revents)
		cm_check(c);
	return 0;
}

void cn_verbs_conn_fds(const struct cn_verbs_conn *c, int fds[2])
{
	fds[0] = c->comp_ch->fd;
	fds[1] = c->cm_ch->fd;
}

int cn_verbs_poll_nb(struct cn_verbs_conn *c, struct cn_verbs_wc *wc, int max)
{
	struct ibv_cq *cq;
	void *ctx;
	int n;

	if (c == NULL || wc == NULL || max <= 0)
		return -EINVAL;
	while (ibv_get_cq_event(c->comp_ch, &cq, &ctx) == 0)
		ibv_ack_cq_events(cq, 1);
	cm_check(c);
	n = drain(c, wc, max);
	if (n > 0)
		return n;
	if (c->err != 0)
		return c->err;
	/* arm, then look again: a completion that came before arming raises no event */
	if (ibv_req_notify_cq(c->scq, 0) != 0 || ibv_req_notify_cq(c->rcq, 0) != 0) {
		conn_fail(c, -EIO);
		return c->err;
	}
	n = drain(c, wc, max);
	return n > 0 ? n : c->err;
}

int cn_verbs_poll(struct cn_verbs_conn *c, struct cn_verbs_wc *wc, int max, int timeout_ms)
{
	uint64_t deadline, spin_end;
	int n, rc;

	if (c == NULL || wc == NULL || max <= 0)
		return -EINVAL;
	n = drain(c, wc, max);
	if (n > 0)
		return n;
	if (timeout_ms == 0) {
		/* a busy poller learns of a disconnect without a syscall per call */
		if (c->err == 0 && ++c->cm_check % VERBS_CM_CHECK_EVERY == 0)
			cm_check(c);
		return c->err;
	}
	deadline = deadline_of(timeout_ms);
	spin_end = now_ns() + (uint64_t)c->spin_us * 1000u;
	for (;;) {
		uint64_t t;

		if (c->err != 0)
			return c->err;
		n = drain(c, wc, max);
		if (n > 0)
			return n;
		t = now_ns();
		if (t >= deadline)
			return -ETIMEDOUT;
		if (t < spin_end)
			continue;
		/* arm, then look again: a completion that came before arming raises no event */
		if (ibv_req_notify_cq(c->scq, 0) != 0 || ibv_req_notify_cq(c->rcq, 0) != 0) {
			conn_fail(c, -EIO);
			continue;
		}
		n = drain(c, wc, max);
		if (n > 0)
			return n;
		rc = wait_events(c, deadline);
		if (rc != 0)
			return rc;
	}
}
