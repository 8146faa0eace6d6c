/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "redis.h"

bool cn_have_redis(void)
{
	return system("command -v redis-server >/dev/null 2>&1") == 0;
}

int cn_redis_start(struct cn_redis *r, uint16_t port, const char *password)
{
	char portbuf[8];

	if (r->pid > 0)
		return -EBUSY;
	r->port = port ? port : cn_free_port();
	snprintf(r->password, sizeof(r->password), "%s", password ? password : "");
	snprintf(r->url, sizeof(r->url), "redis://%s%s%s127.0.0.1:%u", r->password[0] ? ":" : "",
		 r->password, r->password[0] ? "@" : "", r->port);
	snprintf(r->log, sizeof(r->log), "/tmp/cn-itest-redis-%d-%u.log", (int)getpid(), r->port);
	snprintf(portbuf, sizeof(portbuf), "%u", r->port);
	r->pid = fork();
	if (r->pid < 0)
		return -errno;
	if (r->pid == 0) {
		const char *argv[16] = {"redis-server", "--port", portbuf, "--bind", "127.0.0.1",
					"--save", "", "--appendonly", "no", "--logfile", r->log};
		int argc = 11;

		if (r->password[0]) {
			argv[argc++] = "--requirepass";
			argv[argc++] = r->password;
		}
		argv[argc] = NULL;
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
		execvp("redis-server", (char *const *)argv);
		_exit(127);
	}
	for (int i = 0; i < 1000; i++) {
		redisContext *c = cn_redis_connect(r, 0);
		int st;

		if (c != NULL) {
			redisReply *x = redisCommand(c, "PING");
			bool ok = x != NULL && x->type == REDIS_REPLY_STATUS;

			if (x != NULL)
				freeReplyObject(x);
			redisFree(c);
			if (ok)
				return 0;
		}
		if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
			char cmd[200];

			r->pid = 0;
			snprintf(cmd, sizeof(cmd), "cat %s >&2", r->log);
			fprintf(stderr, "redis-server exited (status %d)\n", st);
			(void)cn_run(cmd, NULL, 0);
			return -ECHILD;
		}
		usleep(10 * 1000);
	}
	cn_redis_stop(r, true);
	return -ETIMEDOUT;
}

void cn_redis_stop(struct cn_redis *r, bool kill_it)
{
	int st;

	if (r->pid <= 0)
		return;
	kill(r->pid, SIGCONT); /* a stopped server cannot act on SIGTERM */
	kill(r->pid, kill_it ? SIGKILL : SIGTERM);
	waitpid(r->pid, &st, 0);
	r->pid = 0;
}

redisContext *cn_redis_connect(const struct cn_redis *r, unsigned db)
{
	struct timeval tv = {.tv_sec = 2};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
	redisReply *x;

	if (c == NULL || c->err) {
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	if (r->password[0]) {
		x = redisCommand(c, "AUTH %s", r->password);
		if (x == NULL || x->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(x);
	}
	if (db != 0) {
		x = redisCommand(c, "SELECT %u", db);
		if (x == NULL || x->type == REDIS_REPLY_ERROR)
			goto fail;
		freeReplyObject(x);
	}
	return c;
fail:
	if (x != NULL)
		freeReplyObject(x);
	redisFree(c);
	return NULL;
}

long long cn_redis_cmd_int(redisContext *c, const char *fmt, ...)
{
	va_list ap;
	redisReply *x;
	long long v = -1000;

	va_start(ap, fmt);
	x = redisvCommand(c, fmt, ap);
	va_end(ap);
	if (x != NULL && x->type == REDIS_REPLY_INTEGER)
		v = x->integer;
	if (x != NULL)
		freeReplyObject(x);
	return v;
}
