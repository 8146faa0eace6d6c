/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers shared by the unit tests that run the L2 tier for real: a
 * completion queue standing in for a transport's wake path, and a loopback
 * port nobody listens on.
 */
#ifndef CN_TEST_WAKE_H
#define CN_TEST_WAKE_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cn_transport.h"

/* The jobs handed back, newest first, as a transport's completion queue holds them. */
struct cn_test_waiter {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct cn_async *got;
};

#define CN_TEST_WAITER_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL}

/* struct cn_wake.post as a transport's: any thread, never blocks for long. */
static inline void cn_test_wake_post(void *w, struct cn_async *job)
{
	struct cn_test_waiter *wt = w;

	pthread_mutex_lock(&wt->lock);
	job->next = wt->got;
	wt->got = job;
	pthread_cond_signal(&wt->cond);
	pthread_mutex_unlock(&wt->lock);
}

/* The next job handed back, or NULL after 10 s. */
static inline struct cn_async *cn_test_wait_job(struct cn_test_waiter *wt)
{
	struct timespec until;
	struct cn_async *a;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&wt->lock);
	while (wt->got == NULL)
		if (pthread_cond_timedwait(&wt->cond, &wt->lock, &until) != 0)
			break;
	a = wt->got;
	if (a != NULL)
		wt->got = a->next;
	pthread_mutex_unlock(&wt->lock);
	return a;
}

/* A loopback TCP port with nobody listening (connect() is refused at once), or 0. */
static inline unsigned cn_test_dead_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port = 0;

	if (fd < 0)
		return 0;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
	    getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

#endif /* CN_TEST_WAKE_H */
