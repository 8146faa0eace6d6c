/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trace files: every engine operation a node was asked to do, with its keys,
 * sizes, status and times, so that cachenode-replay can run the same
 * workload again later, elsewhere, without the inference engine. No payload
 * bytes are recorded: a replay stores generated data of the recorded size.
 *
 * docs/trace-format.md is the byte-level reference; this header is its C
 * form. In short (all integers little-endian):
 *
 *   file   = header (hdr_len bytes, CRC32C at its end), then records
 *   record = u32 len, u16 kind, u16 flags, u32 crc, body (len - 12 bytes)
 *
 * Versioning: the header's version changes only for an incompatible change
 * and a reader refuses versions it does not know. Compatible growth needs
 * no new version: readers skip records of kinds they do not know (by len),
 * ignore bytes past the fields they know at the end of a record and of the
 * header (hdr_len), so new kinds and new trailing fields never break old
 * readers.
 *
 * A recording may span several files (--trace-max-size): FILE, FILE.1,
 * FILE.2, ...; each starts with a header (same trace_id, file_seq 0, 1, ...)
 * and ends with an END record naming the next one. A file without an END
 * record was cut short (the node crashed or was killed): it is readable up
 * to its last whole record.
 *
 * The writer and the reader are plain C (no DPDK state; CRC32C comes from
 * DPDK's header-only rte_hash_crc). The writer is used by the telemetry
 * drain thread (tel.c), the reader by cachenode-replay and the tests.
 */
#ifndef CN_TRACE_H
#define CN_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cachenode/proto.h>

#define CN_TRACE_MAGIC	   "CNTRACE" /* 8 bytes with its NUL */
#define CN_TRACE_VERSION   1
#define CN_TRACE_HDR_LEN   256		/* version 1's header; readers accept longer */
#define CN_TRACE_REC_HDR   12		/* len, kind, flags, crc */
#define CN_TRACE_OP_BODY   48		/* the part every operation record starts with */
#define CN_TRACE_MAX_REC   (1u << 20)	/* readers refuse longer records */
#define CN_TRACE_MAX_KEYS  CN_PROTO_MAX_KEYS /* keys of one record the node writes */
#define CN_TRACE_MIN_ROTATE (64u << 10) /* smallest --trace-max-size */

/*
 * Record kinds. 1..15 are operations (they share struct cn_trace_op);
 * prefetch is defined for the L2 tier and not emitted yet. Names appear in
 * cachenode-replay's report.
 */
#define CN_TRACE_OPS(X)                                                                     \
	X(lookup, 1, "LOOKUP of a key batch: keys, keys found (prefix)")                     \
	X(store, 2, "one chunk, reserve to commit/abort (or a failed reserve): key, bytes")  \
	X(retrieve, 3, "one chunk, pin to unpin (or a miss): key, bytes")                    \
	X(delete, 4, "DELETE of one key")                                                    \
	X(prefetch, 5, "L2 -> L1 prefetch of a key batch (not emitted yet: no L2 tier)")

enum cn_trace_kind {
#define X(n, v, h) CN_TRACE_##n = v,
	CN_TRACE_OPS(X)
#undef X
	CN_TRACE_OP_LAST = 15, /* kinds 1..15 are operations */
	CN_TRACE_LOST = 16,    /* records dropped (a full trace ring) since the last one */
	CN_TRACE_END = 17,     /* the file's last record */
};

/* The node configuration that matters for replay, and who recorded. */
struct cn_trace_meta {
	char node_id[CN_PROTO_MAX_NAME + 1];
	char version[32];	/* "cachenode 0.1.0" */
	char eviction[16];	/* --eviction */
	uint64_t l1_size;	/* --l1-size */
	uint64_t l1_capacity;	/* bytes the pool holds (whole pages of it) */
	uint64_t max_chunk;	/* --max-chunk */
	uint32_t workers;
};

/* A decoded header. */
struct cn_trace_header {
	uint16_t version;
	uint16_t hdr_len;
	uint64_t trace_id;	/* shared by every file of one recording */
	uint32_t file_seq;	/* 0 for FILE, n for FILE.n */
	uint64_t start_mono_ns;	/* CLOCK_MONOTONIC when the recording started */
	uint64_t start_wall_ns;	/* CLOCK_REALTIME then (ns since the Unix epoch) */
	uint64_t digest;	/* cn_trace_config_digest() of meta */
	struct cn_trace_meta meta;
};

/*
 * The common part of an operation record, plus its kind-specific numbers.
 * An operation is recorded when it ends: a store at commit or abort (it
 * began at the reserve), a retrieve at the unpin (it began at the pin), or
 * where it failed; dur_ns says when it began.
 */
struct cn_trace_op {
	uint64_t mono_ns;	/* CLOCK_MONOTONIC at the end (from the core's TSC) */
	uint64_t wall_ns;	/* CLOCK_REALTIME at the end */
	uint64_t dur_ns;	/* end - start: reserve..commit, pin..unpin; 0 = one instant */
	uint64_t op_id;		/* telemetry session id: the span's id in --trace-spans */
	uint64_t conn;		/* client connection id; 0 = not known (see trace-format.md) */
	uint16_t core;		/* worker slot that ran it */
	int32_t status;		/* 0 or a negative errno (Linux numbers) */
	uint32_t nkeys;		/* lookup/prefetch: keys in the batch; others: 1 */
	uint32_t val;		/* lookup/prefetch: keys found; store/retrieve: chunk bytes */
};

/* One record as the reader returns it. Pointers are owned by the reader. */
struct cn_trace_rec {
	uint16_t kind;
	uint32_t len;		/* bytes in the file */
	uint64_t offset;	/* where it starts in its file */
	struct cn_trace_op op;	/* operation kinds */
	const struct cn_key *keys; /* op.nkeys keys; valid until the next call */
	uint64_t lost;		/* LOST: records dropped since the previous LOST */
	uint64_t lost_total;	/* LOST, END: dropped since the recording started */
	uint64_t records;	/* END: operation records in this file */
	uint32_t next_seq;	/* END: 0 = the recording ends here, n = it goes on in FILE.n */
};

/* cn_trace_crc32c - CRC32C (Castagnoli) of @len bytes: "123456789" -> 0xe3069283. */
uint32_t cn_trace_crc32c(const void *buf, size_t len);

/*
 * cn_trace_config_digest - FNV-1a (64 bit) of the text
 * "l1_size=<bytes>;max_chunk=<bytes>;eviction=<name>": equal digests mean a
 * replay target configured like the recording node.
 */
uint64_t cn_trace_config_digest(uint64_t l1_size, uint64_t max_chunk, const char *eviction);

/* cn_trace_kind_name - "lookup" ... "lost", "end"; NULL for unknown kinds. */
const char *cn_trace_kind_name(unsigned kind);

/* ---- writer ---- */

struct cn_trace_writer;

struct cn_trace_writer_cfg {
	const char *path;
	/*
	 * 0: one file. Otherwise start FILE.<n+1> before a record would take
	 * the current file over max_size bytes (>= CN_TRACE_MIN_ROTATE).
	 */
	uint64_t max_size;
	const struct cn_trace_meta *meta;
	uint64_t trace_id; /* 0: made up from the time and the pid */
};

struct cn_trace_writer_stats {
	uint64_t records; /* operation records handed to the kernel (write) */
	uint64_t bytes;	  /* bytes handed to the kernel, over every file */
	uint64_t files;	  /* files opened */
	uint64_t errors;  /* records lost to an I/O error (buffered ones included) */
};

/*
 * cn_trace_writer_open - create (truncate) @cfg->path and write its header.
 * Buffered: records reach the file at cn_trace_writer_flush(), when the
 * buffer fills, at a rotation and at close. Returns 0 and *out (owned by
 * the caller: cn_trace_writer_close()), -EINVAL (bad cfg, max_size too
 * small), -ENOMEM, or -errno from open/write.
 *
 * Errors are sticky: after the first failed write the writer writes nothing
 * more (a partial record in the middle of a file would make the rest
 * unreadable), every later call returns that error and counts its record in
 * stats.errors. What was written before stays readable.
 */
int cn_trace_writer_open(const struct cn_trace_writer_cfg *cfg, struct cn_trace_writer **out);

/* An operation record of @kind (1..15) with op->nkeys keys (<= CN_TRACE_MAX_KEYS). 0 or -errno. */
int cn_trace_writer_op(struct cn_trace_writer *w, unsigned kind, const struct cn_trace_op *op,
		       const struct cn_key *keys);

/* A LOST record: @lost records were dropped before reaching the writer. 0 or -errno. */
int cn_trace_writer_lost(struct cn_trace_writer *w, uint64_t lost, uint64_t mono_ns);

/*
 * A record of any kind with a raw body (tests, and kinds this writer does not
 * know yet). Returns 0, -E2BIG past CN_TRACE_MAX_REC, or -errno.
 */
int cn_trace_writer_raw(struct cn_trace_writer *w, uint16_t kind, const void *body,
			uint32_t body_len);

/* Write what is buffered. 0 or -errno. */
int cn_trace_writer_flush(struct cn_trace_writer *w);

void cn_trace_writer_stats(const struct cn_trace_writer *w, struct cn_trace_writer_stats *out);

/* The path of the file being written (FILE or FILE.n). Owned by @w. */
const char *cn_trace_writer_path(const struct cn_trace_writer *w);

/*
 * cn_trace_writer_close - write the END record, flush, close, free; *w
 * becomes NULL; @final (may be NULL) receives the last stats. Accepts NULL.
 * Returns 0 or the first error the writer met.
 */
int cn_trace_writer_close(struct cn_trace_writer **w, struct cn_trace_writer_stats *final);

/* ---- reader ---- */

struct cn_trace_reader;

/*
 * cn_trace_reader_open - open @path and check its header.
 * cn_trace_reader_fopen - the same on an open stream, which the reader then
 * owns (closed by cn_trace_reader_close(), also on failure).
 * Returns 0 and *out (owned by the caller), or -errno with a one-line reason
 * in @err: -EBADMSG (not a trace file, header checksum), -EPROTONOSUPPORT
 * (a format version this reader does not know), -ENODATA (the file ends
 * inside the header), -ENOMEM, or the error of fopen/fread.
 */
int cn_trace_reader_open(const char *path, struct cn_trace_reader **out, char *err,
			 size_t errlen);
int cn_trace_reader_fopen(FILE *f, struct cn_trace_reader **out, char *err, size_t errlen);

const struct cn_trace_header *cn_trace_reader_header(const struct cn_trace_reader *r);

/*
 * cn_trace_reader_next - the next record of a known kind (unknown kinds are
 * skipped by their length and counted). Returns 1 and *rec; 0 at the end:
 * after the END record (cn_trace_reader_complete() is true) or where the
 * file stops being whole (cut short by a crash: the end of the file inside a
 * record, or a zero-filled tail); -EBADMSG for a corrupt record (bad
 * checksum, impossible length or fields, bytes after the END record), with
 * the reason in cn_trace_reader_errmsg(); -errno for a read error. After 0
 * or an error every call returns the same.
 */
int cn_trace_reader_next(struct cn_trace_reader *r, struct cn_trace_rec *rec);

/* True once the END record was read: the file was closed cleanly. */
bool cn_trace_reader_complete(const struct cn_trace_reader *r);
/* Records of unknown kinds skipped so far. */
uint64_t cn_trace_reader_skipped(const struct cn_trace_reader *r);
/* Bytes of whole records (and header) read so far. */
uint64_t cn_trace_reader_offset(const struct cn_trace_reader *r);
/* Why the last call failed, or why the file ended early ("" if it did not). */
const char *cn_trace_reader_errmsg(const struct cn_trace_reader *r);

void cn_trace_reader_close(struct cn_trace_reader **r);

#endif /* CN_TRACE_H */
