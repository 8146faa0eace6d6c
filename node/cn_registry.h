/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cluster registry client (node/registry.c): the node's record in Redis,
 * its heartbeat, its events, and the list of live peers read back.
 *
 * One control-plane thread ("cn-registry") owns a synchronous hiredis
 * connection with connect and command timeouts. Every heartbeat it writes
 * the node's record (MULTI; EXISTS; HSET; PEXPIRE 3 heartbeats; SADD; EXEC,
 * pipelined in one round trip), PUBLISHes join / health events when they
 * happen, and then reads every record of the cluster into an immutable
 * snapshot of the live nodes (cn_reg_peers()). When Redis is down, slow or
 * refuses, the connection is dropped and re-made with capped exponential
 * backoff (at most one heartbeat between attempts, with jitter); on the
 * first heartbeat after that the record, the set membership and a join event
 * (if the record had expired) are written again.
 *
 * Nothing of the data path calls into this module or waits for it: the
 * workers never see it. Readers (status tree, /metrics, DPDK telemetry, the
 * L2 tier) take a mutex only to copy a few figures or a snapshot pointer;
 * it is never held across Redis I/O.
 *
 * The registry thread builds the record through the caller's fill callback
 * (the node's status tree) once per heartbeat.
 */
#ifndef CN_REGISTRY_H
#define CN_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "cn_metrics.h"
#include "cn_reg_record.h"

/* Counters of the registry thread (its only writer), exported as cachenode_registry_*. */
#define CN_REG_METRICS(X)                                                                          \
	X(connects, COUNTER, "connections to Redis made (AUTH, SELECT and CLIENT SETNAME done)")   \
	X(reconnects, COUNTER, "of those, connections made again after one was lost")             \
	X(connect_errors, COUNTER,                                                                 \
	  "connection attempts that failed (refused, timed out, AUTH or SELECT refused)")          \
	X(heartbeats_ok, COUNTER, "heartbeats written (record, expiry and set membership)")       \
	X(heartbeat_errors, COUNTER,                                                               \
	  "heartbeats that failed (timeout, I/O or Redis error); the connection is dropped")       \
	X(events_published, COUNTER, "join, leave and health events PUBLISHed")                   \
	X(reads_ok, COUNTER, "reads of the cluster's records into the peer snapshot")             \
	X(read_errors, COUNTER, "reads that failed; the connection is dropped")                   \
	X(bad_records, COUNTER,                                                                    \
	  "registry entries ignored, per read: a set member that is not a node id, a record "      \
	  "with missing or invalid fields, or naming another node or cluster, a key of another "  \
	  "type")                                                                                  \
	X(pruned, COUNTER, "set members removed whose record had been gone for 100 heartbeats")   \
	X(peers_joined, COUNTER, "peers that entered the live snapshot")                          \
	X(peers_lost, COUNTER, "peers that left the live snapshot (left, expired or stale)")      \
	X(peers_seen, GAUGE, "live peers (other nodes) in the last read")

struct cn_reg_stats {
	CN_REG_METRICS(CN_METRIC_FIELD)
};

extern const struct cn_metric_desc cn_reg_metric_desc[];
extern const unsigned cn_reg_metric_count;

/* Set members whose record stays gone this many heartbeats are removed from the set. */
#define CN_REG_PRUNE_BEATS 100
/* At most this many set members are read; more are counted as bad records. */
#define CN_REG_MAX_NODES 1024

struct cn_reg;

/*
 * Fill @rec with the node's figures for this heartbeat (node_id, cluster,
 * updated_at and heartbeat_ms are set by the registry afterwards). Runs on
 * the registry thread. Returns 0 or -errno (the heartbeat is skipped).
 */
typedef int (*cn_reg_fill_fn)(void *arg, struct cn_reg_record *rec);

struct cn_reg_cfg {
	const char *url;	/* redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] */
	const char *cluster;	/* cn_reg_name_valid() */
	const char *node_id;	/* cn_reg_name_valid() */
	unsigned heartbeat_ms;	/* 10..3600000 */
	unsigned timeout_ms;	/* connect and command timeout; 0 = heartbeat/2 within 100..1000 */
	cn_reg_fill_fn fill;
	void *fill_arg;		/* must outlive the registry's thread (cn_reg_stop()) */
};

/**
 * cn_reg_create - check @cfg and set up (no thread, no connection yet).
 * Returns 0 and *out (owned by the caller: cn_reg_destroy()), -EINVAL for a
 * bad URL, name or heartbeat (logged), -ENOMEM.
 */
int cn_reg_create(const struct cn_reg_cfg *cfg, struct cn_reg **out);

/**
 * cn_reg_start - start the registry thread: it connects and publishes at
 * once, then every heartbeat. Returns 0 or -errno (pthread_create).
 */
int cn_reg_start(struct cn_reg *r);

/**
 * cn_reg_stop - stop the thread and leave the cluster: DEL the record, SREM
 * the id, PUBLISH leave, each Redis step bounded by @leave_timeout_ms (one
 * connection attempt if none is open), so a shutdown with Redis gone takes
 * at most the command in flight (one timeout) plus about three times
 * @leave_timeout_ms. Idempotent; a registry never started just returns.
 */
void cn_reg_stop(struct cn_reg *r, unsigned leave_timeout_ms);

/** cn_reg_destroy - stop (without leave if not stopped), free; *r becomes NULL; accepts NULL. */
void cn_reg_destroy(struct cn_reg **r);

/* A copy of the registry's state for exporters. */
struct cn_reg_info {
	char redis[320];	/* the URL without credentials */
	char cluster[CN_REG_NAME_MAX + 1];
	char node_key[160];	/* cachenode:<cluster>:node:<node-id> */
	unsigned heartbeat_ms, timeout_ms;
	bool auth;		/* a password is configured */
	bool connected;		/* a connection is open and its last command succeeded */
	int64_t last_ok_age_ms;	/* since the last heartbeat written; -1 = never */
	char last_error[192];	/* the last failure, "" if none yet */
	unsigned live_nodes;	/* in the last snapshot, this node included */
	bool healthy;
	char reason[640];	/* "ok" or why not */
	struct cn_reg_stats st;
};

/*
 * cn_reg_get_info - the state of this moment; any thread. The health rule:
 * healthy while connected and the last heartbeat was written no more than
 * two heartbeats ago; the reason says what failed and since when.
 */
void cn_reg_get_info(struct cn_reg *r, struct cn_reg_info *out);

/* One live node of the snapshot. */
struct cn_reg_peer {
	struct cn_reg_record rec;
	uint64_t age_ms; /* record age at the read, by Redis's clock (TIME) */
	int64_t ttl_ms;	 /* the key's PTTL at the read; -1 = no expiry */
	bool self;	 /* this node's own record */
};

/* An immutable list of the live nodes, sorted by node id. */
struct cn_reg_peers {
	uint64_t generation;  /* bumped by every read that changed who is live, or a live
			       * node's address, transport, RDMA device, GID or health */
	uint64_t read_at_ms;  /* when it was read, unix ms by Redis's clock; 0 = never read */
	uint64_t changed_at_ms; /* when the set of live nodes last changed, unix ms by this
				 * node's clock (taken as the read that saw it completed) */
	unsigned n;
	unsigned refs;	      /* private: the registry's reference count */
	struct cn_reg_peer peer[];
};

/**
 * cn_reg_peers - the current snapshot of live nodes (this node included,
 * marked self), for the L2 tier's placement and for exporters. Never NULL:
 * before the first read, and for a registry that is NULL, an empty snapshot.
 * The caller owns one reference and gives it back with cn_reg_peers_put();
 * the snapshot never changes, a newer read publishes a new one. Readers are
 * never blocked by Redis I/O. While Redis is unreachable the last snapshot
 * read stays current (peers are not dropped because Redis is gone).
 */
const struct cn_reg_peers *cn_reg_peers(struct cn_reg *r);

/** cn_reg_peers_put - give back a reference from cn_reg_peers(); *p becomes NULL; accepts NULL. */
void cn_reg_peers_put(const struct cn_reg_peers **p);

#endif /* CN_REGISTRY_H */
