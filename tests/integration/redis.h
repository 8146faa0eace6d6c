/* SPDX-License-Identifier: Apache-2.0 */
/* A real redis-server on a loopback port for the registry tests. */
#ifndef CN_ITEST_REDIS_H
#define CN_ITEST_REDIS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

struct cn_redis {
	pid_t pid;	    /* 0 when not running */
	uint16_t port;
	char password[64];  /* "" = none */
	char url[160];	    /* redis://[:PASSWORD@]127.0.0.1:PORT */
	char log[128];
};

/* cn_have_redis - redis-server is on PATH (the tests exit 77 without it). */
bool cn_have_redis(void);

/*
 * cn_redis_start - run `redis-server --port P --bind 127.0.0.1 --save ''
 * --appendonly no [--requirepass PW]` on @port (0: a free one) and wait until
 * it answers PING (up to 10 s). No persistence: a restart starts empty.
 * Returns 0 or -errno (the log is printed).
 */
int cn_redis_start(struct cn_redis *r, uint16_t port, const char *password);

/* cn_redis_stop - SIGKILL (@kill) or SIGTERM, and reap. Accepts a stopped server. */
void cn_redis_stop(struct cn_redis *r, bool kill);

/*
 * cn_redis_connect - a new connection of the test's own (AUTH done when the
 * server has a password, SELECT @db), 2 s timeouts; NULL if it fails.
 * Caller frees (redisFree).
 */
redisContext *cn_redis_connect(const struct cn_redis *r, unsigned db);

/* cn_redis_cmd_int - run a command returning an integer; the integer, or -1000 on failure. */
long long cn_redis_cmd_int(redisContext *c, const char *fmt, ...);

#endif
