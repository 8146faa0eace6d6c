/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCP transport.
 *
 * Server: one listening socket, in every worker's epoll set with
 * EPOLLEXCLUSIVE (one worker is woken per arrival). The worker that accepts
 * gives each connection to the worker with the fewest connections (itself,
 * or another through that worker's handoff queue and eventfd), so load is
 * spread evenly and deterministically; the kernel's SO_REUSEPORT hash put
 * 3 or 4 of 4 connections on one of 2 workers in about half the runs. Each
 * worker owns its connections, its epoll set and its eventfd (also used for
 * shutdown). The loop blocks in epoll_wait when idle, so an idle node uses no
 * CPU. Bytes are received
 * where the session says (its header buffer, or straight into a reserved L1
 * slab) and sent from the iovecs it offers (which may point into pinned
 * slabs): the transport never copies payload.
 *
 * Client: a blocking socket with SO_RCVTIMEO/SO_SNDTIMEO; recv uses
 * MSG_WAITALL so an exact-length read is one system call in the common case.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "cn_transport.h"

#define TCP_MAX_EVENTS	64
#define TCP_RX_BUDGET	(4u << 20) /* bytes read from one connection per wake-up */
#define TCP_TX_IOV	256

struct tcp_conn {
	struct tcp_worker *w;
	int fd;
	void *sess;
	uint32_t events;	/* current epoll interest */
	bool closing;		/* protocol error: flush then close */
	bool rd_eof;		/* the peer shut its side: send what is owed, then close */
	bool lingering;		/* session gone, our side shut: discarding input until EOF */
	uint64_t last_io_ms;	/* last time bytes moved either way */
	uint64_t linger_until_ms;
	struct cn_wake wake;	/* handed to the session at open() */
	struct tcp_conn *prev, *next;
};

/* A connection accepted by one worker for another. */
struct tcp_handoff {
	int fd;
	char peer[INET6_ADDRSTRLEN + 8];
};

#define TCP_HANDOFF_MAX 64

struct tcp_worker {
	struct cn_server *srv;
	unsigned id;
	int epfd;
	int evfd;
	int spare_fd; /* closed to accept-and-refuse when the process is out of fds */
	uint64_t next_tick_ms;
	unsigned nconns; /* written by this worker, read by acceptors (relaxed) */
	struct tcp_conn *conns;
	struct cn_transport_stats *st;
	pthread_mutex_t hlock; /* the handoff queue: accept-rate traffic only */
	unsigned nhand;
	struct tcp_handoff hand[TCP_HANDOFF_MAX];
	/* async completions (cn_transport.h): an MPSC stack, any thread pushes */
	struct cn_async *_Atomic done;
	/* event tags for the listener and the eventfd (conns use their struct) */
	char ltag, etag;
};

struct cn_server {
	struct cn_server_cfg cfg;
	char addr[INET6_ADDRSTRLEN + 8];
	int lfd;
	struct tcp_worker *w;
	atomic_uint rr; /* breaks ties between equally loaded workers */
	atomic_int stopping;
	int grace_ms;
};

/*
 * Client connection. Small frames sent with CN_SEND_MORE are gathered in wbuf
 * and sent when the client next has to read (or the buffer fills), and reads are buffered in
 * rbuf, so a pipelined client makes a few system calls per batch of
 * requests instead of three per request. Payloads of TCP_DIRECT bytes or
 * more are never copied: they go to and from the caller's memory directly.
 */
#define TCP_CBUF   (64u << 10)
#define TCP_DIRECT (16u << 10)

struct cn_tconn {
	int fd;
	size_t roff, rlen; /* unread bytes are rbuf[roff, rlen) */
	size_t wlen;	   /* bytes waiting in wbuf */
	uint8_t rbuf[TCP_CBUF];
	uint8_t wbuf[TCP_CBUF];
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int resolve(const char *addr, int passive, struct sockaddr_storage *ss, socklen_t *sslen)
{
	char host[256], port_s[8];
	uint16_t port;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
	int r = cn_parse_hostport(addr, host, sizeof(host), &port);

	if (r < 0)
		return r;
	if (passive)
		hints.ai_flags |= AI_PASSIVE;
	snprintf(port_s, sizeof(port_s), "%u", port);
	r = getaddrinfo(host, port_s, &hints, &res);
	if (r != 0) /* a name that does not resolve is an address we cannot use */
		return r == EAI_SYSTEM ? -errno : r == EAI_MEMORY ? -ENOMEM : -EADDRNOTAVAIL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sslen = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char h[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &in->sin_addr, h, sizeof(h));
		port = ntohs(in->sin_port);
		snprintf(out, len, "%s:%u", h, port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, h, sizeof(h));
		port = ntohs(in6->sin6_port);
		snprintf(out, len, "[%s]:%u", h, port);
	} else {
		snprintf(out, len, "?");
	}
}

static int listen_socket(const struct sockaddr_storage *ss, socklen_t sslen)
{
	int one = 1;
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	/* SO_REUSEADDR only: a port held by anyone else fails with EADDRINUSE */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (const struct sockaddr *)ss, sslen) < 0 || listen(fd, 1024) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* wake.post: push @job on worker @wp's completion stack and wake it (any thread). */
static void tcp_wake_post(void *wp, struct cn_async *job)
{
	struct tcp_worker *w = wp;

	cn_async_push(&w->done, w->evfd, job);
}

static void tcp_server_destroy(struct cn_server **psrv)
{
	struct cn_server *srv = psrv ? *psrv : NULL;

	if (srv == NULL)
		return;
	for (unsigned i = 0; srv->w && i < srv->cfg.nworkers; i++) {
		struct tcp_worker *w = &srv->w[i];
		while (w->conns) {
			struct tcp_conn *c = w->conns;
			w->conns = c->next;
			if (c->sess != NULL)
				srv->cfg.sess->close(c->sess, -ESHUTDOWN);
			close(c->fd);
			free(c);
		}
		/* every session is closed: the jobs left are orphaned, async_done frees them */
		for (struct cn_async *j = cn_async_take(&w->done), *next; j != NULL; j = next) {
			next = j->next;
			if (srv->cfg.sess->async_done)
				srv->cfg.sess->async_done(j);
		}
		for (unsigned k = 0; k < w->nhand; k++)
			close(w->hand[k].fd);
		pthread_mutex_destroy(&w->hlock);
		if (w->spare_fd >= 0)
			close(w->spare_fd);
		if (w->evfd >= 0)
			close(w->evfd);
		if (w->epfd >= 0)
			close(w->epfd);
	}
	if (srv->lfd >= 0)
		close(srv->lfd);
	free(srv->w);
	free(srv);
	*psrv = NULL;
}

static int tcp_server_create(const struct cn_server_cfg *cfg, struct cn_server **out)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	struct cn_server *srv;
	int r;

	if (cfg == NULL || cfg->sess == NULL || cfg->stats == NULL || cfg->nworkers == 0 ||
	    cfg->nworkers >= CN_MAX_CORES)
		return -EINVAL;
	r = resolve(cfg->listen, 1, &ss, &sslen);
	if (r < 0)
		return r;
	srv = calloc(1, sizeof(*srv));
	if (srv == NULL)
		return -ENOMEM;
	srv->lfd = -1;
	srv->cfg = *cfg;
	if (srv->cfg.max_conns == 0)
		srv->cfg.max_conns = 4096;
	if (srv->cfg.request_timeout_ms == 0)
		srv->cfg.request_timeout_ms = 30000;
	srv->w = calloc(cfg->nworkers, sizeof(*srv->w));
	if (srv->w == NULL) {
		free(srv);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < cfg->nworkers; i++) {
		srv->w[i].evfd = srv->w[i].epfd = -1;
		srv->w[i].spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		srv->w[i].srv = srv;
		srv->w[i].id = i;
		srv->w[i].st = &cfg->stats[i];
		pthread_mutex_init(&srv->w[i].hlock, NULL);
	}
	r = listen_socket(&ss, sslen);
	if (r < 0)
		goto err;
	srv->lfd = r;
	sslen = sizeof(ss);
	if (getsockname(srv->lfd, (struct sockaddr *)&ss, &sslen) < 0) { /* port 0 */
		r = -errno;
		goto err;
	}
	format_addr(&ss, srv->addr, sizeof(srv->addr));
	for (unsigned i = 0; i < cfg->nworkers; i++) {
		struct tcp_worker *w = &srv->w[i];
		struct epoll_event ev = {.events = EPOLLIN | EPOLLEXCLUSIVE};

		w->epfd = epoll_create1(EPOLL_CLOEXEC);
		w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w->epfd < 0 || w->evfd < 0) {
			r = -errno;
			goto err;
		}
		ev.data.ptr = &w->ltag;
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, srv->lfd, &ev) < 0) {
			r = -errno;
			goto err;
		}
		ev = (struct epoll_event){.events = EPOLLIN, .data.ptr = &w->etag};
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev) < 0) {
			r = -errno;
			goto err;
		}
	}
	*out = srv;
	return 0;
err:
	tcp_server_destroy(&srv);
	return r;
}

static const char *tcp_server_addr(const struct cn_server *srv)
{
	return srv->addr;
}

#define TCP_LINGER_MS 2000 /* how long a closing connection waits for the peer's EOF */
#define TCP_TICK_MS   1000 /* housekeeping period while a worker has connections */

/* Free a connection now: its session (if still there) and its socket. */
static void conn_free(struct tcp_conn *c, int err)
{
	struct tcp_worker *w = c->w;

	epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->sess != NULL)
		w->srv->cfg.sess->close(c->sess, err);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	__atomic_store_n(&w->nconns, w->nconns - 1, __ATOMIC_RELAXED);
	CN_STAT_INC(w->st, conns_closed);
	CN_STAT_SET(w->st, conns_open, w->nconns);
	if (err != 0)
		CN_STAT_INC(w->st, conn_errors);
	free(c);
}

/*
 * Close a connection whose output is all sent. The session goes at once
 * (its slabs and pins are released), but the socket lingers: closing a
 * socket with unread input makes the kernel send a reset and throw away
 * what is still queued for the peer (replies it is owed, an ERROR frame).
 * So shut our side, discard input until the peer's EOF or TCP_LINGER_MS,
 * then close.
 */
static void conn_close(struct tcp_conn *c, int err)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};

	if (c->rd_eof || c->lingering) {
		conn_free(c, err);
		return;
	}
	c->w->srv->cfg.sess->close(c->sess, err);
	c->sess = NULL;
	if (err != 0)
		CN_STAT_INC(c->w->st, conn_errors);
	if (shutdown(c->fd, SHUT_WR) < 0 ||
	    epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) {
		conn_free(c, 0);
		return;
	}
	c->events = ev.events;
	c->lingering = true;
	c->linger_until_ms = now_ms() + TCP_LINGER_MS;
}

/* A lingering connection is readable: discard, and free it at EOF. */
static void conn_linger(struct tcp_conn *c)
{
	char sink[4096];

	for (;;) {
		ssize_t n = recv(c->fd, sink, sizeof(sink), MSG_DONTWAIT);

		if (n > 0)
			continue;
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			conn_free(c, 0);
		return;
	}
}

static void conn_set_events(struct tcp_conn *c, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};

	if (events == c->events)
		return;
	if (epoll_ctl(c->w->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->events = events;
}

/* Send what the session has queued. Returns 1 if output remains, 0 if all sent, -errno. */
static int conn_flush(struct tcp_conn *c)
{
	const struct cn_session_ops *so = c->w->srv->cfg.sess;
	struct iovec iov[TCP_TX_IOV];

	for (;;) {
		int n = so->tx_iov(c->sess, iov, TCP_TX_IOV);
		struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
		ssize_t s;

		if (n == 0)
			return 0;
		s = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (s < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 1;
			if (errno == EINTR)
				continue;
			return -errno;
		}
		CN_STAT_INC(c->w->st, tx_calls);
		CN_STAT_ADD(c->w->st, bytes_tx, s);
		c->last_io_ms = now_ms();
		if (so->tx_done(c->sess, (size_t)s) < 0)
			c->closing = true;
	}
}

/* Read what is there (bounded). Returns 0, or -errno / -ECONNRESET / 1 for EOF. */
static int conn_read(struct tcp_conn *c)
{
	const struct cn_session_ops *so = c->w->srv->cfg.sess;
	size_t budget = TCP_RX_BUDGET;

	while (budget > 0 && !c->closing && !so->rx_paused(c->sess)) {
		void *buf;
		size_t len;
		ssize_t n;
		int r;

		so->rx_buf(c->sess, &buf, &len);
		if (len > budget)
			len = budget;
		n = recv(c->fd, buf, len, MSG_DONTWAIT);
		if (n == 0)
			return 1;
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			return -errno;
		}
		CN_STAT_INC(c->w->st, rx_calls);
		CN_STAT_ADD(c->w->st, bytes_rx, n);
		c->last_io_ms = now_ms();
		budget -= (size_t)n;
		r = so->rx_done(c->sess, (size_t)n);
		if (r < 0)
			c->closing = true;
		if ((size_t)n < len)
			return 0; /* socket drained */
	}
	return 0;
}

/*
 * Handle readiness on one connection, then decide what to wait for next.
 * Output is flushed after every read pass, so pipelined replies leave in
 * batches; a session that has too much output pending pauses its input.
 */
static void conn_event(struct tcp_conn *c, uint32_t events, bool draining)
{
	const struct cn_session_ops *so = c->w->srv->cfg.sess;
	int r = 0, tx;
	uint32_t want;

	if (c->lingering) {
		conn_linger(c);
		return;
	}
	if (!c->rd_eof && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
		r = conn_read(c);
		if (r < 0) {
			conn_close(c, r);
			return;
		}
		c->rd_eof = r == 1;
	}
	tx = conn_flush(c);
	if (tx < 0) {
		conn_close(c, tx);
		return;
	}
	/*
	 * The peer shut its sending side (it may still be reading): nothing more
	 * can be asked of us, but every reply owed is sent before closing.
	 */
	if (c->rd_eof && tx == 0) {
		conn_close(c, so->idle(c->sess) ? 0 : -ECONNRESET);
		return;
	}
	if ((c->closing || (draining && so->idle(c->sess))) && tx == 0) {
		conn_close(c, c->closing ? -EPROTO : 0);
		return;
	}
	/* Input interest (and RDHUP, which is level-triggered too) only while reading. */
	want = 0;
	if (!c->closing && !c->rd_eof && !so->rx_paused(c->sess))
		want |= EPOLLIN | EPOLLRDHUP;
	if (tx == 1)
		want |= EPOLLOUT;
	conn_set_events(c, want);
}

/* Make @fd a connection of worker @w (called on @w's thread). */
static void conn_add(struct tcp_worker *w, int fd, const char *peer)
{
	struct cn_server *srv = w->srv;
	struct tcp_conn *c;
	struct epoll_event ev;
	int one = 1;

	if (w->nconns >= srv->cfg.max_conns || atomic_load(&srv->stopping))
		goto refuse;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		goto refuse;
	c->w = w;
	c->fd = fd;
	c->last_io_ms = now_ms();
	c->wake = (struct cn_wake){.post = tcp_wake_post, .worker = w, .conn = c};
	c->sess = srv->cfg.sess->open(srv->cfg.sess_arg, w->id, peer, 0, &c->wake);
	if (c->sess == NULL) {
		free(c);
		goto refuse;
	}
	c->events = EPOLLIN | EPOLLRDHUP;
	ev.events = c->events;
	ev.data.ptr = c;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		srv->cfg.sess->close(c->sess, -errno);
		free(c);
		goto refuse;
	}
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	__atomic_store_n(&w->nconns, w->nconns + 1, __ATOMIC_RELAXED);
	CN_STAT_INC(w->st, conns_accepted);
	CN_STAT_SET(w->st, conns_open, w->nconns);
	return;
refuse:
	CN_STAT_INC(w->st, conns_refused);
	close(fd);
}

/*
 * Run the async completions posted to @w: the session takes each job, then
 * its connection is serviced as after a read (replies the job released are
 * flushed, input interest follows the session). An orphaned job is freed by
 * async_done() and its connection, possibly gone, is not touched.
 */
static void run_done(struct tcp_worker *w, bool draining)
{
	const struct cn_session_ops *so = w->srv->cfg.sess;

	for (struct cn_async *j = cn_async_take(&w->done), *next; j != NULL; j = next) {
		struct tcp_conn *c = j->conn;
		int r;

		next = j->next;
		r = so->async_done(j);
		if (r == 0)
			continue;
		if (r < 0)
			c->closing = true;
		conn_event(c, 0, draining);
	}
}

/*
 * The worker with the fewest connections; ties go round robin so that a
 * burst of connections arriving at an idle node is spread too. Counts
 * include connections queued for handoff.
 */
static struct tcp_worker *pick_worker(struct cn_server *srv)
{
	unsigned n = srv->cfg.nworkers, start = atomic_fetch_add(&srv->rr, 1) % n;
	struct tcp_worker *best = NULL;
	unsigned best_load = UINT_MAX;

	for (unsigned k = 0; k < n; k++) {
		struct tcp_worker *w = &srv->w[(start + k) % n];
		unsigned load = __atomic_load_n(&w->nconns, __ATOMIC_RELAXED) +
				__atomic_load_n(&w->nhand, __ATOMIC_RELAXED);

		if (load < best_load) {
			best = w;
			best_load = load;
		}
	}
	return best;
}

/* Queue @fd for worker @to and wake it; false if its queue is full. */
static bool handoff(struct tcp_worker *to, int fd, const char *peer)
{
	uint64_t one = 1;
	bool ok = false;

	pthread_mutex_lock(&to->hlock);
	if (to->nhand < TCP_HANDOFF_MAX) {
		to->hand[to->nhand].fd = fd;
		snprintf(to->hand[to->nhand].peer, sizeof(to->hand[0].peer), "%s", peer);
		__atomic_store_n(&to->nhand, to->nhand + 1, __ATOMIC_RELAXED);
		ok = true;
	}
	pthread_mutex_unlock(&to->hlock);
	if (ok && write(to->evfd, &one, sizeof(one)) < 0) {
		/* eventfd full means a wake-up is already pending */
	}
	return ok;
}

/* Take the connections other workers handed to @w. */
static void take_handoffs(struct tcp_worker *w)
{
	struct tcp_handoff got[TCP_HANDOFF_MAX];
	unsigned n;

	pthread_mutex_lock(&w->hlock);
	n = w->nhand;
	memcpy(got, w->hand, n * sizeof(got[0]));
	__atomic_store_n(&w->nhand, 0, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&w->hlock);
	for (unsigned i = 0; i < n; i++)
		conn_add(w, got[i].fd, got[i].peer);
}

static void worker_accept(struct tcp_worker *w)
{
	struct cn_server *srv = w->srv;

	for (;;) {
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		char peer[INET6_ADDRSTRLEN + 8];
		struct tcp_worker *to;
		int fd = accept4(srv->lfd, (struct sockaddr *)&ss, &sslen,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0 && (errno == EMFILE || errno == ENFILE) && w->spare_fd >= 0) {
			/*
			 * Out of descriptors: the listener stays readable, so returning
			 * would spin. Free the spare, accept and close at once (the
			 * client sees the connection refused), take the spare back.
			 */
			close(w->spare_fd);
			fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0) {
				close(fd);
				CN_STAT_INC(w->st, conns_refused);
			}
			w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			/*
			 * accept4 reports EMFILE before it looks at the queue: only
			 * a connection actually refused means more may be waiting.
			 */
			if (fd < 0)
				return;
			continue;
		}
		if (fd < 0)
			return; /* EAGAIN (another worker took it), or a transient error */
		format_addr(&ss, peer, sizeof(peer));
		to = pick_worker(srv);
		if (to == w || !handoff(to, fd, peer))
			conn_add(w, fd, peer);
	}
}

/*
 * Housekeeping, at most every TCP_TICK_MS: free lingering connections past
 * their deadline, and close connections stuck in the middle of a request
 * (a STORE whose payload stopped coming, replies nobody reads) for longer
 * than the request timeout, so one stalled client cannot hold reserved or
 * pinned chunks for ever.
 */
static void worker_tick(struct tcp_worker *w)
{
	const struct cn_session_ops *so = w->srv->cfg.sess;
	uint64_t now = now_ms(), limit = w->srv->cfg.request_timeout_ms;
	struct tcp_conn *c, *next;

	if (now < w->next_tick_ms)
		return;
	w->next_tick_ms = now + TCP_TICK_MS;
	for (c = w->conns; c != NULL; c = next) {
		next = c->next;
		if (c->lingering) {
			if (now >= c->linger_until_ms)
				conn_free(c, 0);
		} else if (!so->idle(c->sess) && now - c->last_io_ms > limit) {
			CN_STAT_INC(w->st, conn_timeouts);
			conn_free(c, -ETIMEDOUT); /* nothing will be read or sent anyway */
		}
	}
}

static int tcp_server_run(struct cn_server *srv, unsigned worker)
{
	struct tcp_worker *w;
	struct epoll_event evs[TCP_MAX_EVENTS];
	bool draining = false;
	uint64_t deadline = 0;

	if (worker >= srv->cfg.nworkers)
		return -EINVAL;
	w = &srv->w[worker];
	for (;;) {
		/* a housekeeping tick only while there are connections to watch */
		int timeout = draining ? 20 : w->conns != NULL ? TCP_TICK_MS : -1;
		int n = epoll_wait(w->epfd, evs, TCP_MAX_EVENTS, timeout);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		CN_STAT_INC(w->st, wakeups);
		for (int i = 0; i < n; i++) {
			void *tag = evs[i].data.ptr;

			if (tag == &w->ltag) {
				if (!draining)
					worker_accept(w);
			} else if (tag == &w->etag) {
				uint64_t v;
				if (read(w->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					return -errno;
				take_handoffs(w); /* refused (closed) once stopping */
				run_done(w, draining);
			} else {
				conn_event(tag, evs[i].events, draining);
			}
		}
		if (!draining && atomic_load(&srv->stopping)) {
			draining = true;
			deadline = now_ms() + (uint64_t)srv->grace_ms;
			epoll_ctl(w->epfd, EPOLL_CTL_DEL, srv->lfd, NULL);
			take_handoffs(w);
		}
		if (draining) {
			bool late = now_ms() >= deadline;
			struct tcp_conn *c = w->conns, *next;

			for (; c != NULL; c = next) {
				next = c->next;
				if (late)
					conn_free(c, c->sess ? -ESHUTDOWN : 0);
				else if (c->lingering)
					continue; /* freed at the peer's EOF or its linger deadline */
				else if (srv->cfg.sess->idle(c->sess) && conn_flush(c) == 0)
					conn_close(c, 0);
			}
			if (w->conns == NULL)
				return 0;
		}
		worker_tick(w);
	}
}

static void tcp_server_stop(struct cn_server *srv, int grace_ms)
{
	uint64_t one = 1;

	srv->grace_ms = grace_ms < 0 ? 0 : grace_ms;
	atomic_store(&srv->stopping, 1);
	/* stop accepting now: new connection attempts are refused from here on */
	shutdown(srv->lfd, SHUT_RDWR);
	for (unsigned i = 0; i < srv->cfg.nworkers; i++)
		if (write(srv->w[i].evfd, &one, sizeof(one)) < 0) {
			/* eventfd full means a wake-up is already pending */
		}
}

/* ---- client ---- */

static int tcp_connect(const struct cn_connect_cfg *cfg, struct cn_tconn **out)
{
	struct sockaddr_storage ss;
	socklen_t sslen = 0;
	struct cn_tconn *c;
	int fd, r, one = 1;
	struct pollfd pfd;
	socklen_t elen = sizeof(r);

	r = resolve(cfg->addr, 0, &ss, &sslen);
	if (r < 0)
		return r;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&ss, sslen) < 0) {
		if (errno != EINPROGRESS) {
			r = -errno;
			goto err;
		}
		pfd = (struct pollfd){.fd = fd, .events = POLLOUT};
		r = poll(&pfd, 1, cfg->timeout_ms > 0 ? cfg->timeout_ms : -1);
		if (r == 0) {
			r = -ETIMEDOUT;
			goto err;
		}
		if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &r, &elen) < 0) {
			r = -errno;
			goto err;
		}
		if (r != 0) {
			r = -r;
			goto err;
		}
	}
	/* Back to blocking I/O with per-call time limits. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		r = -errno;
		goto err;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (cfg->timeout_ms > 0) {
		struct timeval tv = {.tv_sec = cfg->timeout_ms / 1000,
				     .tv_usec = (cfg->timeout_ms % 1000) * 1000};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		r = -ENOMEM;
		goto err;
	}
	c->fd = fd;
	*out = c;
	return 0;
err:
	close(fd);
	return r;
}

static int io_err(void)
{
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return -ETIMEDOUT;
	if (errno == EPIPE)
		return -ECONNRESET;
	return -errno;
}

/* Send every byte of @iov (any count); 0 or -errno. */
static int send_all(int fd, const struct iovec *iov, int iovcnt)
{
	struct iovec local[IOV_MAX < 1024 ? IOV_MAX : 1024];
	const int lmax = (int)(sizeof(local) / sizeof(local[0]));
	int i = 0;
	size_t off = 0; /* bytes of iov[i] already sent */

	while (i < iovcnt) {
		int n = 0;
		ssize_t s;
		struct msghdr mh = {.msg_iov = local};

		for (int k = i; k < iovcnt && n < lmax; k++) {
			local[n].iov_base = (char *)iov[k].iov_base + (k == i ? off : 0);
			local[n].iov_len = iov[k].iov_len - (k == i ? off : 0);
			n++;
		}
		mh.msg_iovlen = (size_t)n;
		s = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (s < 0) {
			if (errno == EINTR)
				continue;
			return io_err();
		}
		while (i < iovcnt && (size_t)s >= iov[i].iov_len - off) {
			s -= (ssize_t)(iov[i].iov_len - off);
			off = 0;
			i++;
		}
		off += (size_t)s;
	}
	return 0;
}

static int flush_wbuf(struct cn_tconn *c)
{
	struct iovec iov = {c->wbuf, c->wlen};
	int r;

	if (c->wlen == 0)
		return 0;
	r = send_all(c->fd, &iov, 1);
	c->wlen = 0;
	return r;
}

static int tcp_sendv(struct cn_tconn *c, const struct iovec *iov, int iovcnt, unsigned flags)
{
	size_t total = 0;
	struct iovec *all;
	int r;

	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	if ((flags & CN_SEND_MORE) && total < TCP_DIRECT && c->wlen + total <= TCP_CBUF) {
		for (int i = 0; i < iovcnt; i++) {
			memcpy(c->wbuf + c->wlen, iov[i].iov_base, iov[i].iov_len);
			c->wlen += iov[i].iov_len;
		}
		return 0;
	}
	if (c->wlen == 0)
		return send_all(c->fd, iov, iovcnt);
	/* what is buffered goes first, in the same system call */
	all = malloc(sizeof(*all) * ((size_t)iovcnt + 1));
	if (all == NULL)
		return -ENOMEM;
	all[0] = (struct iovec){c->wbuf, c->wlen};
	memcpy(all + 1, iov, sizeof(*iov) * (size_t)iovcnt);
	r = send_all(c->fd, all, iovcnt + 1);
	c->wlen = 0;
	free(all);
	return r;
}

static int tcp_recv(struct cn_tconn *c, void *buf, size_t len)
{
	char *p = buf;

	while (len > 0) {
		size_t avail = c->rlen - c->roff;
		ssize_t n;
		int r;

		if (avail > 0) {
			size_t k = avail < len ? avail : len;
			memcpy(p, c->rbuf + c->roff, k);
			c->roff += k;
			p += k;
			len -= k;
			continue;
		}
		/* About to block on the socket: nothing buffered may stay unsent. */
		r = flush_wbuf(c);
		if (r < 0)
			return r;
		if (len >= TCP_DIRECT) {
			n = recv(c->fd, p, len, MSG_WAITALL);
			if (n > 0) {
				p += n;
				len -= (size_t)n;
			}
		} else {
			n = recv(c->fd, c->rbuf, TCP_CBUF, 0);
			if (n > 0) {
				c->roff = 0;
				c->rlen = (size_t)n;
			}
		}
		if (n == 0)
			return -ECONNRESET;
		if (n < 0 && errno != EINTR)
			return io_err();
	}
	return 0;
}

static void tcp_close(struct cn_tconn **pc)
{
	if (pc == NULL || *pc == NULL)
		return;
	flush_wbuf(*pc); /* best effort: queued requests still reach the node */
	close((*pc)->fd);
	free(*pc);
	*pc = NULL;
}

const struct cn_transport_ops cn_tcp_ops = {
	.name = "tcp",
	.server_create = tcp_server_create,
	.server_addr = tcp_server_addr,
	.server_run = tcp_server_run,
	.server_stop = tcp_server_stop,
	.server_destroy = tcp_server_destroy,
	.connect = tcp_connect,
	.sendv = tcp_sendv,
	.recv = tcp_recv,
	.close = tcp_close,
};
