/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Loopback transport: an in-process server for engine and session unit
 * tests. A client connection drives the session synchronously on the
 * caller's thread: sendv() feeds every byte through rx_buf()/rx_done() (so
 * the session runs exactly the code path the TCP workers run, including
 * receiving payloads straight into reserved slabs) and recv() takes bytes from
 * tx_iov()/tx_done(). No threads, no sockets; server_run() has nothing to do.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cn_transport.h"

#define LOOP_TX_IOV 64

struct cn_server {
	struct cn_server_cfg cfg;
	unsigned nconns;
};

struct cn_tconn {
	struct cn_server *srv;
	void *sess;
	int err; /* sticky: the session closed the connection */
};

static int loop_server_create(const struct cn_server_cfg *cfg, struct cn_server **out)
{
	struct cn_server *srv;

	if (cfg == NULL || cfg->sess == NULL || cfg->stats == NULL || cfg->nworkers == 0)
		return -EINVAL;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	srv->cfg = *cfg;
	*out = srv;
	return 0;
}

static const char *loop_server_addr(const struct cn_server *srv)
{
	return "loopback";
}

static int loop_server_run(struct cn_server *srv, unsigned worker)
{
	return worker < srv->cfg.nworkers ? 0 : -EINVAL;
}

static void loop_server_stop(struct cn_server *srv, int grace_ms)
{
}

static void loop_server_destroy(struct cn_server **psrv)
{
	if (psrv == NULL || *psrv == NULL)
		return;
	free(*psrv);
	*psrv = NULL;
}

static int loop_connect(const struct cn_connect_cfg *cfg, struct cn_tconn **out)
{
	struct cn_server *srv = cfg->server;
	struct cn_transport_stats *st;
	struct cn_tconn *c;

	if (srv == NULL)
		return -EINVAL;
	st = &srv->cfg.stats[0];
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	c->srv = srv;
	/* synchronous, on the caller's thread: no async completion path */
	c->sess = srv->cfg.sess->open(srv->cfg.sess_arg, 0, "loopback", 0, NULL);
	if (c->sess == NULL) {
		CN_STAT_INC(st, conns_refused);
		free(c);
		return -ECONNREFUSED;
	}
	srv->nconns++;
	CN_STAT_INC(st, conns_accepted);
	CN_STAT_SET(st, conns_open, srv->nconns);
	*out = c;
	return 0;
}

static void loop_end(struct cn_tconn *c, int err)
{
	struct cn_transport_stats *st = &c->srv->cfg.stats[0];

	if (c->sess == NULL)
		return;
	c->srv->cfg.sess->close(c->sess, err);
	c->sess = NULL;
	c->srv->nconns--;
	CN_STAT_INC(st, conns_closed);
	CN_STAT_SET(st, conns_open, c->srv->nconns);
	if (err)
		CN_STAT_INC(st, conn_errors);
}

static int loop_sendv(struct cn_tconn *c, const struct iovec *iov, int iovcnt, unsigned flags)
{
	const struct cn_session_ops *so = c->srv->cfg.sess;
	struct cn_transport_stats *st = &c->srv->cfg.stats[0];

	if (c->sess == NULL)
		return -ECONNRESET;
	for (int i = 0; i < iovcnt; i++) {
		const char *p = iov[i].iov_base;
		size_t left = iov[i].iov_len;

		while (left > 0) {
			void *dst;
			size_t n;

			if (so->rx_paused(c->sess))
				return -EAGAIN; /* caller sent more than the session will buffer */
			so->rx_buf(c->sess, &dst, &n);
			if (n > left)
				n = left;
			memcpy(dst, p, n);
			CN_STAT_INC(st, rx_calls);
			CN_STAT_ADD(st, bytes_rx, n);
			p += n;
			left -= n;
			if (so->rx_done(c->sess, n) < 0) {
				c->err = -EPROTO;
				return 0; /* the reply (an error frame) is still readable */
			}
		}
	}
	return 0;
}

static int loop_recv(struct cn_tconn *c, void *buf, size_t len)
{
	const struct cn_session_ops *so;
	struct cn_transport_stats *st;
	char *p = buf;

	if (c->sess == NULL)
		return -ECONNRESET;
	so = c->srv->cfg.sess;
	st = &c->srv->cfg.stats[0];
	while (len > 0) {
		struct iovec iov[LOOP_TX_IOV];
		int n = so->tx_iov(c->sess, iov, LOOP_TX_IOV);
		size_t got = 0;

		if (n == 0) {
			/* Nothing more will come: a synchronous peer has answered everything. */
			if (c->err)
				loop_end(c, c->err);
			return c->err ? -ECONNRESET : -ETIMEDOUT;
		}
		for (int i = 0; i < n && len > 0; i++) {
			size_t k = iov[i].iov_len < len ? iov[i].iov_len : len;
			memcpy(p, iov[i].iov_base, k);
			p += k;
			len -= k;
			got += k;
		}
		CN_STAT_INC(st, tx_calls);
		CN_STAT_ADD(st, bytes_tx, got);
		if (so->tx_done(c->sess, got) < 0)
			c->err = -EPROTO;
	}
	return 0;
}

static void loop_close(struct cn_tconn **pc)
{
	if (pc == NULL || *pc == NULL)
		return;
	loop_end(*pc, (*pc)->err);
	free(*pc);
	*pc = NULL;
}

const struct cn_transport_ops cn_loopback_ops = {
	.name = "loopback",
	.server_create = loop_server_create,
	.server_addr = loop_server_addr,
	.server_run = loop_server_run,
	.server_stop = loop_server_stop,
	.server_destroy = loop_server_destroy,
	.connect = loop_connect,
	.sendv = loop_sendv,
	.recv = loop_recv,
	.close = loop_close,
};
