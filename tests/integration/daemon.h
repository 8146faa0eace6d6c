/* SPDX-License-Identifier: Apache-2.0 */
/* Start and stop the real cachenode daemon for integration tests. */
#ifndef CN_ITEST_DAEMON_H
#define CN_ITEST_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <cachenode/proto.h>

struct cn_daemon {
	pid_t pid;
	char addr[64];	     /* 127.0.0.1:PORT */
	char node_id[64];
	char log[128];	     /* stdout+stderr of the daemon */
};

/*
 * cn_daemon_start - run $CACHENODE_BIN on a free loopback port with the
 * given extra arguments (NULL-terminated), and wait until it answers PING
 * (up to 30 s). A --listen or --node-id among the arguments replaces the
 * chosen one (and d->addr / d->node_id say so; "--node-id ID" restarts a node
 * as itself). Returns 0 or -errno; on
 * failure the log is printed.
 */
int cn_daemon_start(struct cn_daemon *d, const char *const *args);

/*
 * cn_daemon_stop - send @sig and wait up to @timeout_ms for the exit.
 * Returns the exit status (0..255), 128+signal if killed, or -ETIMEDOUT
 * (then it is SIGKILLed).
 */
int cn_daemon_stop(struct cn_daemon *d, int sig, int timeout_ms);

/*
 * cn_pid_stop - SIGSTOP @pid and wait up to @timeout_ms until every one of
 * its threads is stopped (state 'T' in /proc/PID/task/TID/stat). kill()
 * returns as soon as the signal is queued: it wakes one thread, which then
 * stops the others, so until then another thread can still answer a
 * request. Returns 0, -ETIMEDOUT or -errno.
 */
int cn_pid_stop(pid_t pid, int timeout_ms);

/* cn_daemon_log_contains - true if the daemon's log has @text. */
bool cn_daemon_log_contains(const struct cn_daemon *d, const char *text);

/*
 * cn_raw_connect - a plain TCP connection to "HOST:PORT" (IPv4) for raw
 * frames: TCP_NODELAY, 10 s receive timeout. Returns the fd or -errno.
 */
int cn_raw_connect(const char *addr);

/*
 * cn_raw_send_frame - a request frame (header, then @len bytes at @p) on
 * @fd. cn_raw_recv_reply - one reply frame: the decoded header in *h, the
 * payload NUL-terminated in @buf (room @cap > payload). Both 0 or -errno
 * (-EPROTO: not a valid reply header, -E2BIG: payload over @cap - 1).
 */
int cn_raw_send_frame(int fd, uint8_t op, uint16_t flags, uint64_t id, const void *p,
		      uint32_t len);
int cn_raw_recv_reply(int fd, struct cn_proto_hdr *h, char *buf, size_t cap);

/* cn_test_key - the key of printf-style text, by the library's text rule (SHA-256). */
struct cn_key cn_test_key(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* cn_free_port - a loopback TCP port nobody listens on right now. */
uint16_t cn_free_port(void);

/*
 * cn_raw_send_retrieve - send a RETRIEVE of @n (<= 8) keys as a raw frame
 * with request id @id on socket @fd (no client library: the test decides
 * when replies are read). Returns 0 or -errno.
 */
int cn_raw_send_retrieve(int fd, uint64_t id, const struct cn_key *keys, uint32_t n);

/*
 * cn_raw_read_retrieves - read @rounds RETRIEVE replies of @n hits of
 * @chunk bytes each from @fd, the chunk bytes into @sink (@chunk bytes of
 * room). Returns 0 when every reply was CN_OK with exactly those hits,
 * -EPROTO when one was not, or -errno of the socket.
 */
int cn_raw_read_retrieves(int fd, unsigned rounds, uint32_t n, uint32_t chunk, uint8_t *sink);

/* cn_json_at - the value at @path ("a.b.0.c": a number indexes an array) under @node, or NULL. */
typedef struct json_t json_t;
json_t *cn_json_at(json_t *node, const char *path);

/* cn_status_u64 - a number from the node's STATUS JSON ("requests.store_ok";
 * a number indexes an array: "components.l2.peers.0.counters.errors").
 * Returns 0 and *v, or -errno. */
int cn_status_u64(const char *addr, const char *path, uint64_t *v);

/*
 * cn_status_wait_u64 - poll cn_status_u64 every 10 ms until the number is
 * @want, for up to @timeout_ms: what the node does on its own time (a close
 * seen, a timeout cut, a reply to Redis) is counted a little after the test
 * could observe its effect. Connection errors are tried again. 0,
 * -ETIMEDOUT (the last value in *@last), -ENOENT (no number at @path) or the
 * last connection error.
 */
int cn_status_wait_u64(const char *addr, const char *path, uint64_t want, int timeout_ms,
		       uint64_t *last);

/* cn_run - run a shell command, capture up to @cap-1 bytes of stdout in @out. Exit status. */
int cn_run(const char *cmd, char *out, size_t cap);

#endif
