/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trace file writer and reader (docs/trace-format.md). Byte layouts are
 * spelled out once here as offsets; every integer goes through the
 * little-endian helpers of proto.h, so the files are the same on any host.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_hash_crc.h>

#include "cn_trace.h"

#define WBUF_SIZE CN_TRACE_MAX_REC /* the writer's buffer holds any record */

/* Header offsets (version 1). */
enum {
	H_MAGIC = 0,
	H_VERSION = 8,
	H_HDR_LEN = 10,
	H_FLAGS = 12,
	H_TRACE_ID = 16,
	H_FILE_SEQ = 24,
	H_START_MONO = 32,
	H_START_WALL = 40,
	H_L1_SIZE = 48,
	H_L1_CAPACITY = 56,
	H_MAX_CHUNK = 64,
	H_WORKERS = 72,
	H_DIGEST = 80,
	H_EVICTION = 88,  /* 16 bytes, NUL-padded */
	H_NODE_ID = 104,  /* 72 bytes: up to 64 characters, NUL-padded */
	H_VERSION_STR = 176, /* 32 bytes */
	H_CRC = CN_TRACE_HDR_LEN - 4,
};

/* Operation body offsets, after the 12-byte record header. */
enum {
	OP_MONO = 0,
	OP_WALL = 8,
	OP_DUR = 16,
	OP_ID = 24,
	OP_CONN = 32,
	OP_CORE = 40,
	OP_STATUS = 44,
	OP_END = CN_TRACE_OP_BODY,
};

/* Smallest bodies of the fixed kinds. */
#define BODY_BATCH (OP_END + 8)		    /* nkeys, found, then the keys */
#define BODY_CHUNK (OP_END + 8 + CN_KEY_LEN) /* len, 0, key */
#define BODY_DELETE (OP_END + CN_KEY_LEN)
#define BODY_LOST  24			    /* lost, lost_total, mono_ns */
#define BODY_END   24			    /* records, lost_total, next_seq, 0 */

/*
 * CRC32C register update over @n bytes at any alignment: DPDK's crc32
 * instructions (or its tables), fed 8 bytes at a time through memcpy
 * (rte_hash_crc() itself dereferences unaligned uint64_t pointers, which
 * records at any offset in a buffer would give it).
 */
static uint32_t crc_update(uint32_t c, const void *buf, size_t n)
{
	const uint8_t *p = buf;

	for (; n >= 8; p += 8, n -= 8) {
		uint64_t v;

		memcpy(&v, p, sizeof(v));
		c = rte_hash_crc_8byte(v, c);
	}
	for (; n > 0; p++, n--)
		c = rte_hash_crc_1byte(*p, c);
	return c;
}

uint32_t cn_trace_crc32c(const void *buf, size_t len)
{
	return ~crc_update(0xffffffffu, buf, len);
}

/*
 * A record's CRC covers the previous record's CRC (the header's for the
 * first record), then the record but its own field: bytes [0, 8) and
 * [12, len). The chain makes a record dropped, repeated or moved as wrong as
 * a flipped bit.
 */
static uint32_t rec_crc(uint32_t prev, const uint8_t *rec, uint32_t len)
{
	uint8_t p[4];
	uint32_t c;

	cn_put_le32(p, prev);
	c = crc_update(0xffffffffu, p, 4);
	c = crc_update(c, rec, 8);
	return ~crc_update(c, rec + CN_TRACE_REC_HDR, len - CN_TRACE_REC_HDR);
}

uint64_t cn_trace_config_digest(uint64_t l1_size, uint64_t max_chunk, const char *eviction)
{
	char text[128];
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	int n = snprintf(text, sizeof(text), "l1_size=%" PRIu64 ";max_chunk=%" PRIu64 ";eviction=%s",
			 l1_size, max_chunk, eviction != NULL ? eviction : "");

	for (int i = 0; i < n && i < (int)sizeof(text) - 1; i++) {
		h ^= (uint8_t)text[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

const char *cn_trace_kind_name(unsigned kind)
{
	switch (kind) {
#define X(n, v, h)                                                                                 \
	case v:                                                                                    \
		return #n;
		CN_TRACE_OPS(X)
#undef X
	case CN_TRACE_LOST:
		return "lost";
	case CN_TRACE_END:
		return "end";
	default:
		return NULL;
	}
}

static bool is_op_kind(unsigned kind)
{
	return kind >= 1 && kind <= CN_TRACE_OP_LAST;
}

/* Keys in a record of this kind: a batch carries a count, the others one key. */
static bool is_batch_kind(unsigned kind)
{
	return kind == CN_TRACE_lookup || kind == CN_TRACE_prefetch;
}

/* @s (a buffer of @slen bytes) NUL-padded into @len bytes, always terminated. */
static void put_str(uint8_t *dst, size_t len, const char *s, size_t slen)
{
	size_t n = strnlen(s, slen < len - 1 ? slen : len - 1);

	memset(dst, 0, len);
	memcpy(dst, s, n);
}

static void get_str(char *dst, size_t dlen, const uint8_t *src, size_t slen)
{
	size_t n = strnlen((const char *)src, slen);

	if (n >= dlen)
		n = dlen - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

/* ---- writer ---- */

struct cn_trace_writer {
	int fd;
	int err;		/* first error, sticky; 0 = none */
	char *base;		/* FILE */
	char *path;		/* FILE or FILE.n, being written */
	uint64_t max_size;
	uint64_t file_bytes;	/* in the current file, buffered bytes included */
	uint64_t file_records;	/* operation records in the current file */
	uint64_t lost_total;
	uint64_t unflushed;	/* operation records in the buffer */
	uint32_t seq;
	uint32_t prev_crc;	/* of the last record (or header) of the current file */
	uint8_t hdr[CN_TRACE_HDR_LEN];
	struct cn_trace_writer_stats st;
	size_t used;
	uint8_t *buf;
};

static int write_all(int fd, const uint8_t *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int wfail(struct cn_trace_writer *w, int err)
{
	if (w->err == 0)
		w->err = err;
	return w->err;
}

int cn_trace_writer_flush(struct cn_trace_writer *w)
{
	int r;

	if (w->err != 0)
		return w->err;
	if (w->used == 0)
		return 0;
	r = write_all(w->fd, w->buf, w->used);
	if (r < 0) {
		w->st.errors += w->unflushed;
		w->unflushed = 0;
		return wfail(w, r);
	}
	w->st.bytes += w->used;
	w->st.records += w->unflushed;
	w->unflushed = 0;
	w->used = 0;
	return 0;
}

/* Open FILE (seq 0) or FILE.seq and write its header. */
static int open_file(struct cn_trace_writer *w)
{
	size_t len = strlen(w->base) + 16;
	char *path = malloc(len);

	if (path == NULL)
		return -ENOMEM;
	if (w->seq == 0)
		snprintf(path, len, "%s", w->base);
	else
		snprintf(path, len, "%s.%" PRIu32, w->base, w->seq);
	w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		int err = -errno;

		free(path);
		return err;
	}
	free(w->path);
	w->path = path;
	cn_put_le32(w->hdr + H_FILE_SEQ, w->seq);
	w->prev_crc = cn_trace_crc32c(w->hdr, H_CRC);
	cn_put_le32(w->hdr + H_CRC, w->prev_crc);
	memcpy(w->buf, w->hdr, CN_TRACE_HDR_LEN);
	w->used = CN_TRACE_HDR_LEN;
	w->file_bytes = CN_TRACE_HDR_LEN;
	w->file_records = 0;
	w->st.files++;
	return 0;
}

static void rec_done(struct cn_trace_writer *w, uint8_t *p, uint32_t len)
{
	w->prev_crc = rec_crc(w->prev_crc, p, len);
	cn_put_le32(p + 8, w->prev_crc);
	w->used += len;
	w->file_bytes += len;
}

/*
 * Reserve room for a record of @len bytes and return where to build it;
 * the caller fills the body and calls rec_done(). Rotates first when the
 * record would take the file over max_size (keeping room for END).
 */
static uint8_t *rec_begin(struct cn_trace_writer *w, uint16_t kind, uint32_t len, bool rotate)
{
	uint8_t *p;

	if (rotate && w->max_size != 0 && w->file_records != 0 &&
	    w->file_bytes + len + CN_TRACE_REC_HDR + BODY_END > w->max_size) {
		uint8_t *e = rec_begin(w, CN_TRACE_END, CN_TRACE_REC_HDR + BODY_END, false);
		int r;

		if (e == NULL)
			return NULL;
		cn_put_le64(e + CN_TRACE_REC_HDR, w->file_records);
		cn_put_le64(e + CN_TRACE_REC_HDR + 8, w->lost_total);
		cn_put_le32(e + CN_TRACE_REC_HDR + 16, w->seq + 1);
		cn_put_le32(e + CN_TRACE_REC_HDR + 20, 0);
		rec_done(w, e, CN_TRACE_REC_HDR + BODY_END);
		r = cn_trace_writer_flush(w);
		if (close(w->fd) < 0 && r == 0)
			r = wfail(w, -errno);
		w->fd = -1;
		if (r < 0)
			return NULL;
		w->seq++;
		r = open_file(w);
		if (r < 0) {
			wfail(w, r);
			return NULL;
		}
	}
	if (w->used + len > WBUF_SIZE && cn_trace_writer_flush(w) < 0)
		return NULL;
	p = w->buf + w->used;
	cn_put_le32(p, len);
	cn_put_le16(p + 4, kind);
	cn_put_le16(p + 6, 0);
	return p;
}

int cn_trace_writer_open(const struct cn_trace_writer_cfg *cfg, struct cn_trace_writer **out)
{
	const struct cn_trace_meta *m;
	struct cn_trace_writer *w;
	uint64_t mono, wall, id;
	int r;

	if (cfg == NULL || out == NULL || cfg->path == NULL || cfg->path[0] == '\0' ||
	    cfg->meta == NULL || (cfg->max_size != 0 && cfg->max_size < CN_TRACE_MIN_ROTATE))
		return -EINVAL;
	m = cfg->meta;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -ENOMEM;
	w->fd = -1;
	w->max_size = cfg->max_size;
	w->base = strdup(cfg->path);
	w->buf = malloc(WBUF_SIZE);
	if (w->base == NULL || w->buf == NULL) {
		r = -ENOMEM;
		goto free_writer;
	}
	mono = clock_ns(CLOCK_MONOTONIC);
	wall = clock_ns(CLOCK_REALTIME);
	id = cfg->trace_id;
	if (id == 0)
		id = (wall ^ (mono << 17) ^ ((uint64_t)getpid() << 40)) | 1;
	memcpy(w->hdr + H_MAGIC, CN_TRACE_MAGIC, 8);
	cn_put_le16(w->hdr + H_VERSION, CN_TRACE_VERSION);
	cn_put_le16(w->hdr + H_HDR_LEN, CN_TRACE_HDR_LEN);
	cn_put_le32(w->hdr + H_FLAGS, 0);
	cn_put_le64(w->hdr + H_TRACE_ID, id);
	cn_put_le64(w->hdr + H_START_MONO, mono);
	cn_put_le64(w->hdr + H_START_WALL, wall);
	cn_put_le64(w->hdr + H_L1_SIZE, m->l1_size);
	cn_put_le64(w->hdr + H_L1_CAPACITY, m->l1_capacity);
	cn_put_le64(w->hdr + H_MAX_CHUNK, m->max_chunk);
	cn_put_le32(w->hdr + H_WORKERS, m->workers);
	cn_put_le64(w->hdr + H_DIGEST, cn_trace_config_digest(m->l1_size, m->max_chunk,
							      m->eviction));
	put_str(w->hdr + H_EVICTION, H_NODE_ID - H_EVICTION, m->eviction, sizeof(m->eviction));
	put_str(w->hdr + H_NODE_ID, H_VERSION_STR - H_NODE_ID, m->node_id, sizeof(m->node_id));
	put_str(w->hdr + H_VERSION_STR, H_CRC - H_VERSION_STR, m->version, sizeof(m->version));
	r = open_file(w);
	if (r < 0)
		goto free_writer;
	r = cn_trace_writer_flush(w);
	if (r < 0)
		goto close_file;
	*out = w;
	return 0;

close_file:
	close(w->fd);
	unlink(w->path);
free_writer:
	free(w->path);
	free(w->base);
	free(w->buf);
	free(w);
	return r;
}

static void put_op(uint8_t *b, const struct cn_trace_op *op)
{
	cn_put_le64(b + OP_MONO, op->mono_ns);
	cn_put_le64(b + OP_WALL, op->wall_ns);
	cn_put_le64(b + OP_DUR, op->dur_ns);
	cn_put_le64(b + OP_ID, op->op_id);
	cn_put_le64(b + OP_CONN, op->conn);
	cn_put_le16(b + OP_CORE, op->core);
	cn_put_le16(b + OP_CORE + 2, 0);
	cn_put_le32(b + OP_STATUS, (uint32_t)op->status);
}

int cn_trace_writer_op(struct cn_trace_writer *w, unsigned kind, const struct cn_trace_op *op,
		       const struct cn_key *keys)
{
	uint32_t n = is_batch_kind(kind) ? op->nkeys : 1, len;
	uint8_t *p, *b;

	if (!is_op_kind(kind) || n > CN_TRACE_MAX_KEYS || (n != 0 && keys == NULL))
		return -EINVAL;
	if (w->err != 0) {
		w->st.errors++;
		return w->err;
	}
	switch (kind) {
	case CN_TRACE_delete:
		len = CN_TRACE_REC_HDR + BODY_DELETE;
		break;
	case CN_TRACE_store:
	case CN_TRACE_retrieve:
		len = CN_TRACE_REC_HDR + BODY_CHUNK;
		break;
	default:
		len = CN_TRACE_REC_HDR + BODY_BATCH + n * CN_KEY_LEN;
		break;
	}
	p = rec_begin(w, (uint16_t)kind, len, true);
	if (p == NULL) {
		w->st.errors++;
		return w->err;
	}
	b = p + CN_TRACE_REC_HDR;
	put_op(b, op);
	switch (kind) {
	case CN_TRACE_delete:
		memcpy(b + OP_END, keys, CN_KEY_LEN);
		break;
	case CN_TRACE_store:
	case CN_TRACE_retrieve:
		cn_put_le32(b + OP_END, op->val);
		cn_put_le32(b + OP_END + 4, 0);
		memcpy(b + OP_END + 8, keys, CN_KEY_LEN);
		break;
	default:
		cn_put_le32(b + OP_END, n);
		cn_put_le32(b + OP_END + 4, op->val);
		if (n != 0)
			memcpy(b + BODY_BATCH, keys, (size_t)n * CN_KEY_LEN);
		break;
	}
	rec_done(w, p, len);
	w->file_records++;
	w->unflushed++;
	return 0;
}

int cn_trace_writer_lost(struct cn_trace_writer *w, uint64_t lost, uint64_t mono_ns)
{
	uint8_t *p;

	if (w->err != 0)
		return w->err;
	p = rec_begin(w, CN_TRACE_LOST, CN_TRACE_REC_HDR + BODY_LOST, true);
	if (p == NULL)
		return w->err;
	w->lost_total += lost;
	cn_put_le64(p + CN_TRACE_REC_HDR, lost);
	cn_put_le64(p + CN_TRACE_REC_HDR + 8, w->lost_total);
	cn_put_le64(p + CN_TRACE_REC_HDR + 16, mono_ns);
	rec_done(w, p, CN_TRACE_REC_HDR + BODY_LOST);
	return 0;
}

int cn_trace_writer_raw(struct cn_trace_writer *w, uint16_t kind, const void *body,
			uint32_t body_len)
{
	uint8_t *p;

	if (body_len > CN_TRACE_MAX_REC - CN_TRACE_REC_HDR)
		return -E2BIG;
	if (w->err != 0)
		return w->err;
	p = rec_begin(w, kind, CN_TRACE_REC_HDR + body_len, true);
	if (p == NULL)
		return w->err;
	if (body_len != 0)
		memcpy(p + CN_TRACE_REC_HDR, body, body_len);
	rec_done(w, p, CN_TRACE_REC_HDR + body_len);
	return 0;
}

void cn_trace_writer_stats(const struct cn_trace_writer *w, struct cn_trace_writer_stats *out)
{
	*out = w->st;
}

const char *cn_trace_writer_path(const struct cn_trace_writer *w)
{
	return w->path;
}

int cn_trace_writer_close(struct cn_trace_writer **wp, struct cn_trace_writer_stats *final)
{
	struct cn_trace_writer *w;
	int r;

	if (wp == NULL || *wp == NULL)
		return 0;
	w = *wp;
	if (w->err == 0) {
		uint8_t *e = rec_begin(w, CN_TRACE_END, CN_TRACE_REC_HDR + BODY_END, false);

		if (e != NULL) {
			cn_put_le64(e + CN_TRACE_REC_HDR, w->file_records);
			cn_put_le64(e + CN_TRACE_REC_HDR + 8, w->lost_total);
			cn_put_le32(e + CN_TRACE_REC_HDR + 16, 0);
			cn_put_le32(e + CN_TRACE_REC_HDR + 20, 0);
			rec_done(w, e, CN_TRACE_REC_HDR + BODY_END);
		}
		cn_trace_writer_flush(w);
	}
	if (w->fd >= 0 && close(w->fd) < 0)
		wfail(w, -errno);
	r = w->err;
	if (final != NULL)
		*final = w->st;
	free(w->path);
	free(w->base);
	free(w->buf);
	free(w);
	*wp = NULL;
	return r;
}

/* ---- reader ---- */

struct cn_trace_reader {
	FILE *f;
	struct cn_trace_header h;
	uint64_t off;		/* bytes of whole records read */
	uint64_t skipped;
	int state;		/* 0 reading, 1 ended (0 returned), < 0 the error returned */
	uint32_t prev_crc;	/* the chain: last record's CRC (the header's at first) */
	bool complete;
	char msg[256];
	uint8_t *buf;		/* one record */
	size_t cap;		/* grows to the largest record read */
};

/* Room for @len bytes in r->buf. */
static int rgrow(struct cn_trace_reader *r, size_t len)
{
	uint8_t *b;
	size_t cap = r->cap;

	if (len <= cap)
		return 0;
	while (cap < len)
		cap *= 2;
	b = realloc(r->buf, cap);
	if (b == NULL)
		return -ENOMEM;
	r->buf = b;
	r->cap = cap;
	return 0;
}

static void rmsg(struct cn_trace_reader *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void rmsg(struct cn_trace_reader *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
	va_end(ap);
}

static int rfail(struct cn_trace_reader *r, int err)
{
	r->state = err;
	return err;
}

/* Fill @n bytes; returns how many were read (short at the end of the file) or -errno. */
static long rread(struct cn_trace_reader *r, uint8_t *p, size_t n)
{
	size_t got = fread(p, 1, n, r->f);

	if (got < n && ferror(r->f))
		return errno != 0 ? -errno : -EIO;
	return (long)got;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != 0)
			return false;
	return true;
}

/* True when nothing but zero bytes remain (a tail the file system zero-filled). */
static bool rest_is_zero(struct cn_trace_reader *r)
{
	int c;

	while ((c = fgetc(r->f)) != EOF)
		if (c != 0)
			return false;
	return !ferror(r->f);
}

static void hdr_msg(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void hdr_msg(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static int read_header(struct cn_trace_reader *r, char *err, size_t errlen)
{
	uint8_t fixed[12], *h;
	struct cn_trace_header *d = &r->h;
	struct cn_trace_meta *m = &d->meta;
	long got = rread(r, fixed, sizeof(fixed));
	uint16_t hlen;

	if (got < 0) {
		hdr_msg(err, errlen, "cannot read: %s", strerror((int)-got));
		return (int)got;
	}
	if (got >= 8 && memcmp(fixed, CN_TRACE_MAGIC, 8) != 0) {
		hdr_msg(err, errlen, "not a cachenode trace file (bad magic)");
		return -EBADMSG;
	}
	if (got < (long)sizeof(fixed)) {
		hdr_msg(err, errlen, "the file ends inside the header (%ld bytes)", got);
		return -ENODATA;
	}
	d->version = cn_get_le16(fixed + H_VERSION);
	if (d->version != CN_TRACE_VERSION) {
		hdr_msg(err, errlen,
			"trace format version %u is not supported (this reader knows version %u)",
			d->version, CN_TRACE_VERSION);
		return -EPROTONOSUPPORT;
	}
	hlen = cn_get_le16(fixed + H_HDR_LEN);
	if (hlen < CN_TRACE_HDR_LEN) {
		hdr_msg(err, errlen, "corrupt header: length %u", hlen);
		return -EBADMSG;
	}
	if (rgrow(r, hlen) < 0) {
		hdr_msg(err, errlen, "out of memory");
		return -ENOMEM;
	}
	h = r->buf;
	memcpy(h, fixed, sizeof(fixed));
	got = rread(r, h + sizeof(fixed), hlen - sizeof(fixed));
	if (got < 0) {
		hdr_msg(err, errlen, "cannot read: %s", strerror((int)-got));
		return (int)got;
	}
	if ((size_t)got < hlen - sizeof(fixed)) {
		hdr_msg(err, errlen, "the file ends inside the header (%zu of %u bytes)",
			(size_t)got + sizeof(fixed), hlen);
		return -ENODATA;
	}
	if (cn_get_le32(h + hlen - 4) != cn_trace_crc32c(h, hlen - 4u)) {
		hdr_msg(err, errlen, "corrupt header: checksum mismatch");
		return -EBADMSG;
	}
	d->hdr_len = hlen;
	r->prev_crc = cn_get_le32(h + hlen - 4);
	d->trace_id = cn_get_le64(h + H_TRACE_ID);
	d->file_seq = cn_get_le32(h + H_FILE_SEQ);
	d->start_mono_ns = cn_get_le64(h + H_START_MONO);
	d->start_wall_ns = cn_get_le64(h + H_START_WALL);
	d->digest = cn_get_le64(h + H_DIGEST);
	m->l1_size = cn_get_le64(h + H_L1_SIZE);
	m->l1_capacity = cn_get_le64(h + H_L1_CAPACITY);
	m->max_chunk = cn_get_le64(h + H_MAX_CHUNK);
	m->workers = cn_get_le32(h + H_WORKERS);
	get_str(m->eviction, sizeof(m->eviction), h + H_EVICTION, H_NODE_ID - H_EVICTION);
	get_str(m->node_id, sizeof(m->node_id), h + H_NODE_ID, H_VERSION_STR - H_NODE_ID);
	get_str(m->version, sizeof(m->version), h + H_VERSION_STR, H_CRC - H_VERSION_STR);
	r->off = hlen;
	return 0;
}

int cn_trace_reader_fopen(FILE *f, struct cn_trace_reader **out, char *err, size_t errlen)
{
	struct cn_trace_reader *r;
	int ret;

	if (f == NULL || out == NULL) {
		if (f != NULL)
			fclose(f);
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (r != NULL)
		r->cap = 4096;
	if (r == NULL || (r->buf = malloc(r->cap)) == NULL) {
		free(r);
		fclose(f);
		hdr_msg(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r->f = f;
	ret = read_header(r, err, errlen);
	if (ret < 0) {
		cn_trace_reader_close(&r);
		return ret;
	}
	*out = r;
	return 0;
}

int cn_trace_reader_open(const char *path, struct cn_trace_reader **out, char *err,
			 size_t errlen)
{
	FILE *f = fopen(path, "rb");

	if (f == NULL) {
		int e = errno;

		hdr_msg(err, errlen, "%s", strerror(e));
		return -e;
	}
	return cn_trace_reader_fopen(f, out, err, errlen);
}

const struct cn_trace_header *cn_trace_reader_header(const struct cn_trace_reader *r)
{
	return &r->h;
}

/* Decode the body of a known kind into @rec. false: its fields are impossible. */
static bool decode(struct cn_trace_reader *r, uint16_t kind, const uint8_t *b, uint32_t blen,
		   struct cn_trace_rec *rec)
{
	if (kind == CN_TRACE_LOST) {
		if (blen < BODY_LOST)
			return false;
		rec->lost = cn_get_le64(b);
		rec->lost_total = cn_get_le64(b + 8);
		rec->op.mono_ns = cn_get_le64(b + 16);
		return rec->lost <= rec->lost_total;
	}
	if (kind == CN_TRACE_END) {
		if (blen < BODY_END)
			return false;
		rec->records = cn_get_le64(b);
		rec->lost_total = cn_get_le64(b + 8);
		rec->next_seq = cn_get_le32(b + 16);
		return rec->next_seq == 0 || rec->next_seq == r->h.file_seq + 1;
	}
	if (blen < OP_END)
		return false;
	rec->op.mono_ns = cn_get_le64(b + OP_MONO);
	rec->op.wall_ns = cn_get_le64(b + OP_WALL);
	rec->op.dur_ns = cn_get_le64(b + OP_DUR);
	rec->op.op_id = cn_get_le64(b + OP_ID);
	rec->op.conn = cn_get_le64(b + OP_CONN);
	rec->op.core = cn_get_le16(b + OP_CORE);
	rec->op.status = (int32_t)cn_get_le32(b + OP_STATUS);
	if (rec->op.status > 0 || rec->op.dur_ns > rec->op.mono_ns)
		return false;
	switch (kind) {
	case CN_TRACE_delete:
		if (blen < BODY_DELETE)
			return false;
		rec->op.nkeys = 1;
		rec->op.val = 0;
		rec->keys = (const struct cn_key *)(b + OP_END);
		return true;
	case CN_TRACE_store:
	case CN_TRACE_retrieve:
		if (blen < BODY_CHUNK)
			return false;
		rec->op.nkeys = 1;
		rec->op.val = cn_get_le32(b + OP_END);
		rec->keys = (const struct cn_key *)(b + OP_END + 8);
		return true;
	default: /* lookup, prefetch */
		if (blen < BODY_BATCH)
			return false;
		rec->op.nkeys = cn_get_le32(b + OP_END);
		rec->op.val = cn_get_le32(b + OP_END + 4);
		rec->keys = (const struct cn_key *)(b + BODY_BATCH);
		return rec->op.val <= rec->op.nkeys &&
		       (uint64_t)rec->op.nkeys * CN_KEY_LEN <= blen - BODY_BATCH;
	}
}

/* The file stops being whole here: a crash cut it short. */
static int cut_short(struct cn_trace_reader *r, const char *what)
{
	rmsg(r, "cut short at byte %" PRIu64 " (%s): no end record, the node did not close it",
	     r->off, what);
	r->state = 1;
	return 0;
}

int cn_trace_reader_next(struct cn_trace_reader *r, struct cn_trace_rec *rec)
{
	for (;;) {
		uint8_t *p = r->buf;
		uint32_t len, crc;
		uint16_t kind;
		long got;

		if (r->state != 0)
			return r->state > 0 ? 0 : r->state;
		got = rread(r, p, CN_TRACE_REC_HDR);
		if (got < 0) {
			rmsg(r, "read error at byte %" PRIu64 ": %s", r->off, strerror((int)-got));
			return rfail(r, (int)got);
		}
		if (got == 0)
			return cut_short(r, "end of file");
		if (got < CN_TRACE_REC_HDR) {
			if (all_zero(p, (size_t)got) && rest_is_zero(r))
				return cut_short(r, "zero-filled tail");
			return cut_short(r, "end of file inside a record header");
		}
		len = cn_get_le32(p);
		kind = cn_get_le16(p + 4);
		if (len < CN_TRACE_REC_HDR || len > CN_TRACE_MAX_REC) {
			if (all_zero(p, CN_TRACE_REC_HDR) && rest_is_zero(r))
				return cut_short(r, "zero-filled tail");
			rmsg(r, "corrupt record at byte %" PRIu64 ": impossible length %" PRIu32,
			     r->off, len);
			return rfail(r, -EBADMSG);
		}
		if (rgrow(r, len) < 0) {
			rmsg(r, "out of memory");
			return rfail(r, -ENOMEM);
		}
		p = r->buf;
		got = rread(r, p + CN_TRACE_REC_HDR, len - CN_TRACE_REC_HDR);
		if (got < 0) {
			rmsg(r, "read error at byte %" PRIu64 ": %s", r->off, strerror((int)-got));
			return rfail(r, (int)got);
		}
		if ((uint64_t)got < len - CN_TRACE_REC_HDR)
			return cut_short(r, "end of file inside a record");
		crc = cn_get_le32(p + 8);
		if (crc != rec_crc(r->prev_crc, p, len)) {
			rmsg(r, "corrupt record at byte %" PRIu64 " (kind %u, %" PRIu32
			     " bytes): checksum mismatch (damaged, or a record missing, repeated "
			     "or moved before it)", r->off, kind, len);
			return rfail(r, -EBADMSG);
		}
		r->prev_crc = crc;
		if (!is_op_kind(kind) && kind != CN_TRACE_LOST && kind != CN_TRACE_END) {
			r->skipped++;
			r->off += len;
			continue;
		}
		memset(rec, 0, sizeof(*rec));
		rec->kind = kind;
		rec->len = len;
		rec->offset = r->off;
		if (!decode(r, kind, p + CN_TRACE_REC_HDR, len - CN_TRACE_REC_HDR, rec)) {
			rmsg(r, "corrupt record at byte %" PRIu64 " (%s): impossible fields", r->off,
			     cn_trace_kind_name(kind) != NULL ? cn_trace_kind_name(kind) : "?");
			return rfail(r, -EBADMSG);
		}
		r->off += len;
		if (kind == CN_TRACE_END) {
			uint8_t extra;

			if (rread(r, &extra, 1) == 1) {
				rmsg(r, "corrupt file: data after the end record at byte %" PRIu64,
				     r->off);
				return rfail(r, -EBADMSG);
			}
			r->complete = true;
			r->state = 1;
		}
		return 1;
	}
}

bool cn_trace_reader_complete(const struct cn_trace_reader *r)
{
	return r->complete;
}

uint64_t cn_trace_reader_skipped(const struct cn_trace_reader *r)
{
	return r->skipped;
}

uint64_t cn_trace_reader_offset(const struct cn_trace_reader *r)
{
	return r->off;
}

const char *cn_trace_reader_errmsg(const struct cn_trace_reader *r)
{
	return r->msg;
}

void cn_trace_reader_close(struct cn_trace_reader **rp)
{
	if (rp == NULL || *rp == NULL)
		return;
	if ((*rp)->f != NULL)
		fclose((*rp)->f);
	free((*rp)->buf);
	free(*rp);
	*rp = NULL;
}
