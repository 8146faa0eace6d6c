/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The cluster registry's data format, shared by the node's registry client
 * (node/registry.c) and cachenode-status: the Redis URL, the key names, the
 * fields of a node record (one X-macro table: the struct, the parser, the
 * writer and the docs come from it) and the rule that says whether a record
 * is live. Plain C: no Redis client, no DPDK, no globals, so tools link it
 * alone (libcn_regrec.a).
 *
 * Keys (docs/operations.md, "Cluster registry"):
 *   cachenode:<cluster>:node:<node-id>   hash, one per node, PEXPIRE 3 heartbeats
 *   cachenode:<cluster>:nodes            set of node ids
 *   cachenode:<cluster>:events           PUBLISH channel (join, leave, health)
 */
#ifndef CN_REG_RECORD_H
#define CN_REG_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Node ids and cluster names: 1..64 of [A-Za-z0-9._-] (so ':' cannot appear in a key part). */
#define CN_REG_NAME_MAX 64
/* A record is dead once it is this many of its heartbeats old (and its key expires then). */
#define CN_REG_TTL_BEATS 3
/* A record holding more fields than this, or a value longer than 255 bytes, is garbage. */
#define CN_REG_MAX_FIELDS 64
#define CN_REG_MAX_VALUE  255

/*
 * X(name, TYPE, size, required, help): one hash field of a node record.
 * TYPE: STR (printable ASCII, shorter than size), U64 (decimal), RATE (a
 * decimal number 0..1), HEALTH ("healthy" or "unhealthy"; a bool in the
 * struct). A missing required field or an unparsable value makes the whole
 * record invalid; fields not in the table are ignored (newer writers).
 */
#define CN_REG_FIELDS(X)                                                                           \
	X(node_id, STR, CN_REG_NAME_MAX + 1, 1, "the node's `--node-id`; equals the key's last part") \
	X(cluster, STR, CN_REG_NAME_MAX + 1, 1, "the `--cluster` name; equals the key's middle part") \
	X(address, STR, 128, 1, "HOST:PORT clients and peers connect to (the bound `--listen`)")   \
	X(transport, STR, 16, 1, "`tcp` or `verbs`")                                               \
	X(rdma_dev, STR, 64, 0, "under verbs: the RDMA device the node listens on; empty under tcp") \
	X(gid, STR, 48, 0,                                                                         \
	  "under verbs: the port GID of the listen address (empty for a wildcard address); "      \
	  "empty under tcp")                                                                       \
	X(http, STR, 128, 0, "HOST:PORT of the node's HTTP server (`/metrics`, `/api/status`); empty with `--http off`") \
	X(l1_capacity, U64, 0, 1, "L1 bytes usable for chunks")                                     \
	X(l1_used, U64, 0, 1, "L1 bytes held by chunks (slots)")                                    \
	X(chunks, U64, 0, 1, "ready chunks in L1")                                                  \
	X(hit_rate, RATE, 0, 1, "L1 hits / (hits + misses) since the node started, 0..1 (0 before any lookup)") \
	X(health, HEALTH, 0, 1, "`healthy` or `unhealthy`: the node's status tree root")            \
	X(reason, STR, 192, 0, "`ok`, or why the node is unhealthy")                                \
	X(version, STR, 32, 1, "cachenode version")                                                 \
	X(started_at, U64, 0, 1, "when the node started, unix ms")                                  \
	X(updated_at, U64, 0, 1, "when this heartbeat was written, unix ms (the writer's clock)")  \
	X(heartbeat_ms, U64, 0, 1, "the node's `--heartbeat` in ms; the record expires after 3")

enum cn_reg_ftype { CN_REG_T_STR, CN_REG_T_U64, CN_REG_T_RATE, CN_REG_T_HEALTH };

#define CN_REG_CTYPE_STR(n, sz)	   char n[sz];
#define CN_REG_CTYPE_U64(n, sz)	   uint64_t n;
#define CN_REG_CTYPE_RATE(n, sz)   double n;
#define CN_REG_CTYPE_HEALTH(n, sz) bool n; /* true = healthy */
#define CN_REG_RECORD_FIELD(n, t, sz, req, h) CN_REG_CTYPE_##t(n, sz)

/* One node's record, decoded. */
struct cn_reg_record {
	CN_REG_FIELDS(CN_REG_RECORD_FIELD)
};

struct cn_reg_field_desc {
	const char *name;
	enum cn_reg_ftype type;
	size_t off;  /* in struct cn_reg_record */
	size_t size; /* STR: the array size */
	bool required;
	const char *help;
};

extern const struct cn_reg_field_desc cn_reg_field_desc[];
extern const unsigned cn_reg_field_count;

/* A parsed redis:// URL. */
struct cn_reg_url {
	char host[256]; /* name or address, without IPv6 brackets */
	uint16_t port;	/* default 6379 */
	char user[64];	/* ACL user, "" = none (AUTH password) */
	char password[256];
	unsigned db; /* SELECT db, default 0 */
	char redacted[320]; /* the URL without user and password, for logs and status */
};

/**
 * cn_reg_url_parse - "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]" ("[v6]" hosts;
 * USER and PASSWORD percent-decoded; DB 0..65535). Returns 0, or -EINVAL with
 * the reason in @why.
 */
int cn_reg_url_parse(const char *s, struct cn_reg_url *u, char *why, size_t whylen);

/** cn_reg_name_valid - 1..64 of [A-Za-z0-9._-]: a node id or a cluster name. */
bool cn_reg_name_valid(const char *s);

/* Key names into @out (size @len); snprintf's return value. */
int cn_reg_key_node(char *out, size_t len, const char *cluster, const char *node_id);
int cn_reg_key_nodes(char *out, size_t len, const char *cluster);
int cn_reg_key_events(char *out, size_t len, const char *cluster);

/**
 * cn_reg_record_parse - decode a record from the @n field names @names and
 * values @vals (HGETALL's pairs; @lens the value lengths, NULL for
 * NUL-terminated). @key_cluster and @key_id are the parts of the key it was
 * read from: a record naming another cluster or id is invalid (a copy, or a
 * foreign writer). Returns 0, or -EINVAL with the first problem in @why
 * ("field l1_used: not a number", "no field address", "node_id 'b' under
 * key of 'a'"). @out is filled either way (invalid fields zeroed).
 */
int cn_reg_record_parse(const char *const *names, const char *const *vals, const size_t *lens,
			size_t n, const char *key_cluster, const char *key_id,
			struct cn_reg_record *out, char *why, size_t whylen);

/*
 * The record as field/value strings for HSET: @vals points into @buf (size
 * @buflen, 2 KiB is plenty), names from the table. Returns the number of
 * fields (cn_reg_field_count), or -ENOSPC.
 */
int cn_reg_record_format(const struct cn_reg_record *r, const char **names, const char **vals,
			 char *buf, size_t buflen);

/*
 * cn_reg_record_age_ms - how old the record is at @now_ms (unix ms, e.g.
 * Redis TIME); 0 when updated_at is ahead of @now_ms (clock skew).
 */
uint64_t cn_reg_record_age_ms(const struct cn_reg_record *r, uint64_t now_ms);

/*
 * cn_reg_record_live - the liveness rule every reader applies: a record is
 * live while it is younger than CN_REG_TTL_BEATS of its own heartbeats. (Its
 * key expires at the same moment; the age check also catches a record that
 * lost its TTL.)
 */
bool cn_reg_record_live(const struct cn_reg_record *r, uint64_t now_ms);

#endif /* CN_REG_RECORD_H */
