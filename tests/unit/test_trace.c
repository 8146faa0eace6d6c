/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trace recording (--trace-output): the file format (writer and reader,
 * rotation, truncation, corruption, a fuzzer over the reader), and the
 * recorder (per-core trace rings, the drain, drops, the engine's records).
 * Runs without hugepages (cn_test_eal_init).
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cn_engine.h"
#include "cn_tel.h"
#include "cn_test_eal.h"
#include "cn_trace.h"

/* ---- helpers ---- */

static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(2685821657736338717);
}

static char tmpdir[64];
static unsigned tmpseq;

static void tmp_path(char *out, size_t len, const char *what)
{
	snprintf(out, len, "%s/%s-%u.trace", tmpdir, what, tmpseq++);
}

static const struct cn_trace_meta test_meta = {
	.node_id = "unit-node",
	.version = "cachenode test",
	.eviction = "lru",
	.l1_size = 64u << 20,
	.l1_capacity = 63u << 20,
	.max_chunk = 1u << 20,
	.workers = 3,
};

static struct cn_key key_of(uint64_t i)
{
	struct cn_key k;

	for (unsigned b = 0; b < CN_KEY_LEN; b++)
		k.b[b] = (uint8_t)((i * 131 + b * 7) ^ (i >> (b % 8)));
	return k;
}

/* What a test wrote, to compare with what the reader returns. */
struct exp_rec {
	uint16_t kind;
	struct cn_trace_op op;
	uint64_t lost;
	struct cn_key keys[64];
};

struct sample {
	struct exp_rec *r;
	unsigned n;
	uint8_t *bytes; /* the whole file */
	size_t len;
};

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*len = (size_t)n;
	return b;
}

/*
 * A file of @n records of every kind (LOST records among them), written
 * through the writer; with @end the END record is there (closed cleanly).
 */
static void make_sample(struct sample *s, unsigned n, uint64_t seed, bool end)
{
	char path[128];
	struct cn_trace_writer_cfg cfg = {.path = path, .meta = &test_meta, .trace_id = 42};
	struct cn_trace_writer *w;

	tmp_path(path, sizeof(path), "sample");
	s->r = calloc(n, sizeof(*s->r));
	s->n = n;
	assert_int_equal(cn_trace_writer_open(&cfg, &w), 0);
	for (unsigned i = 0; i < n; i++) {
		struct exp_rec *e = &s->r[i];
		uint64_t x = rng_next(&seed);

		if (x % 13 == 0) {
			e->kind = CN_TRACE_LOST;
			e->lost = 1 + x % 5;
			assert_int_equal(cn_trace_writer_lost(w, e->lost, x), 0);
			continue;
		}
		e->kind = (uint16_t)(1 + x % 5);
		e->op = (struct cn_trace_op){
			.mono_ns = 1000 + i * 17,
			.wall_ns = x,
			.dur_ns = x % 999,
			.op_id = i,
			.conn = 0,
			.core = (uint16_t)(x % 4),
			.status = (x >> 8) % 3 == 0 ? -ENOENT : 0,
			.nkeys = 1,
			.val = (uint32_t)(x >> 20) % 4096,
		};
		if (e->kind == CN_TRACE_delete)
			e->op.val = 0;
		if (e->kind == CN_TRACE_lookup || e->kind == CN_TRACE_prefetch) {
			e->op.nkeys = (uint32_t)((x >> 32) % 64);
			e->op.val = e->op.nkeys ? (uint32_t)(x >> 40) % (e->op.nkeys + 1) : 0;
		}
		for (unsigned k = 0; k < e->op.nkeys; k++)
			e->keys[k] = key_of(x + k);
		assert_int_equal(cn_trace_writer_op(w, e->kind, &e->op, e->keys), 0);
	}
	if (end) {
		assert_int_equal(cn_trace_writer_close(&w, NULL), 0);
	} else {
		assert_int_equal(cn_trace_writer_flush(w), 0);
		s->bytes = slurp(path, &s->len);
		assert_int_equal(cn_trace_writer_close(&w, NULL), 0);
		unlink(path);
		return;
	}
	s->bytes = slurp(path, &s->len);
	unlink(path);
}

static void free_sample(struct sample *s)
{
	free(s->r);
	free(s->bytes);
}

static int open_mem(const uint8_t *b, size_t len, struct cn_trace_reader **r, char *err,
		    size_t errlen)
{
	/* fmemopen wants a non-empty buffer */
	FILE *f = len != 0 ? fmemopen((void *)b, len, "rb") : fopen("/dev/null", "rb");

	assert_non_null(f);
	return cn_trace_reader_fopen(f, r, err, errlen);
}

static bool same_rec(const struct exp_rec *e, const struct cn_trace_rec *g)
{
	if (e->kind != g->kind)
		return false;
	if (e->kind == CN_TRACE_LOST)
		return e->lost == g->lost;
	return e->op.mono_ns == g->op.mono_ns && e->op.wall_ns == g->op.wall_ns &&
	       e->op.dur_ns == g->op.dur_ns &&
	       e->op.op_id == g->op.op_id && e->op.conn == g->op.conn &&
	       e->op.core == g->op.core && e->op.status == g->op.status &&
	       e->op.nkeys == g->op.nkeys && e->op.val == g->op.val &&
	       memcmp(e->keys, g->keys, e->op.nkeys * sizeof(e->keys[0])) == 0;
}

/*
 * Read @b and check the reader's contract on a file that may be damaged:
 * either open fails with a clean error, or every record returned equals the
 * original at its position, and reading ends with 0 or a clean error. Returns
 * the records matched; *how gets 1 complete, 0 ended early, < 0 the error.
 */
static unsigned check_prefix(const struct sample *s, const uint8_t *b, size_t len, int *how)
{
	struct cn_trace_reader *r;
	struct cn_trace_rec rec;
	char err[256] = "";
	unsigned i = 0;
	int n = open_mem(b, len, &r, err, sizeof(err));

	if (n < 0) {
		assert_true(n == -EBADMSG || n == -EPROTONOSUPPORT || n == -ENODATA);
		assert_true(err[0] != '\0');
		*how = n;
		return 0;
	}
	while ((n = cn_trace_reader_next(r, &rec)) == 1) {
		if (rec.kind == CN_TRACE_END)
			break;
		assert_true(i < s->n);
		assert_true(same_rec(&s->r[i], &rec));
		i++;
	}
	if (n == 1) {
		/* END: everything before it matched, so it must be the whole file */
		assert_int_equal(i, s->n);
		assert_true(cn_trace_reader_complete(r));
		assert_int_equal(cn_trace_reader_next(r, &rec), 0);
		*how = 1;
	} else if (n == 0) {
		assert_false(cn_trace_reader_complete(r));
		assert_non_null(strstr(cn_trace_reader_errmsg(r), "cut short"));
		*how = 0;
	} else {
		assert_int_equal(n, -EBADMSG);
		assert_true(cn_trace_reader_errmsg(r)[0] != '\0');
		assert_int_equal(cn_trace_reader_next(r, &rec), -EBADMSG); /* sticky */
		*how = n;
	}
	cn_trace_reader_close(&r);
	return i;
}

/* ---- the format ---- */

static void test_crc_and_digest(void **state)
{
	const char *text = "l1_size=67108864;max_chunk=1048576;eviction=lru";
	uint64_t h = UINT64_C(0xcbf29ce484222325);

	(void)state;
	assert_int_equal(cn_trace_crc32c("123456789", 9), 0xe3069283u);
	for (const char *p = text; *p; p++) {
		h ^= (uint8_t)*p;
		h *= UINT64_C(0x100000001b3);
	}
	/* the digest is FNV-1a 64 of exactly the text docs/trace-format.md gives */
	assert_true(cn_trace_config_digest(64u << 20, 1u << 20, "lru") == h);
	assert_true(cn_trace_config_digest(32u << 20, 1u << 20, "lru") != h);
	assert_true(cn_trace_config_digest(64u << 20, 2u << 20, "lru") != h);
	assert_true(cn_trace_config_digest(64u << 20, 1u << 20, "s3fifo") != h);
	assert_string_equal(cn_trace_kind_name(CN_TRACE_lookup), "lookup");
	assert_string_equal(cn_trace_kind_name(CN_TRACE_prefetch), "prefetch");
	assert_null(cn_trace_kind_name(99));
}

static void test_round_trip(void **state)
{
	struct sample s;
	struct cn_trace_reader *r;
	struct cn_trace_rec rec;
	const struct cn_trace_header *h;
	char err[256];
	unsigned i = 0, ops = 0;
	uint64_t lost = 0;

	(void)state;
	make_sample(&s, 400, 1, true);
	assert_int_equal(open_mem(s.bytes, s.len, &r, err, sizeof(err)), 0);
	h = cn_trace_reader_header(r);
	assert_int_equal(h->version, CN_TRACE_VERSION);
	assert_int_equal(h->hdr_len, CN_TRACE_HDR_LEN);
	assert_int_equal(h->trace_id, 42);
	assert_int_equal(h->file_seq, 0);
	assert_true(h->start_mono_ns != 0 && h->start_wall_ns != 0);
	assert_string_equal(h->meta.node_id, "unit-node");
	assert_string_equal(h->meta.version, "cachenode test");
	assert_string_equal(h->meta.eviction, "lru");
	assert_int_equal(h->meta.l1_size, 64u << 20);
	assert_int_equal(h->meta.l1_capacity, 63u << 20);
	assert_int_equal(h->meta.max_chunk, 1u << 20);
	assert_int_equal(h->meta.workers, 3);
	assert_true(h->digest == cn_trace_config_digest(64u << 20, 1u << 20, "lru"));
	while (cn_trace_reader_next(r, &rec) == 1 && rec.kind != CN_TRACE_END) {
		assert_true(same_rec(&s.r[i], &rec));
		if (rec.kind == CN_TRACE_LOST) {
			lost += rec.lost;
			assert_int_equal(rec.lost_total, lost);
		} else {
			ops++;
		}
		i++;
	}
	assert_int_equal(i, s.n);
	assert_true(lost > 0 && ops > 0);
	assert_int_equal(rec.kind, CN_TRACE_END);
	assert_int_equal(rec.records, ops);
	assert_int_equal(rec.lost_total, lost);
	assert_int_equal(rec.next_seq, 0);
	assert_true(cn_trace_reader_complete(r));
	assert_int_equal(cn_trace_reader_skipped(r), 0);
	assert_int_equal(cn_trace_reader_offset(r), s.len);
	assert_int_equal(cn_trace_reader_next(r, &rec), 0);
	cn_trace_reader_close(&r);
	free_sample(&s);
}

/* Future writers may add kinds and trailing fields: this reader skips and ignores them. */
static void test_extensions(void **state)
{
	char path[128];
	struct cn_trace_writer_cfg cfg = {.path = path, .meta = &test_meta};
	struct cn_trace_writer *w;
	struct cn_trace_reader *r;
	struct cn_trace_rec rec;
	struct cn_trace_op op = {.mono_ns = 5, .op_id = 9, .nkeys = 1, .val = 77};
	struct cn_key k = key_of(3);
	uint8_t body[48 + 8 + 32 + 16] = {0}, junk[100];
	char err[256];

	(void)state;
	tmp_path(path, sizeof(path), "ext");
	memset(junk, 0xa5, sizeof(junk));
	/* a STORE body laid out by hand from docs/trace-format.md, with 16 bytes more */
	cn_put_le64(body + 0, 1234);	  /* mono_ns */
	cn_put_le64(body + 8, 5678);	  /* wall_ns */
	cn_put_le64(body + 16, 34);	  /* dur_ns */
	cn_put_le64(body + 24, 99);	  /* op_id */
	cn_put_le64(body + 32, 7);	  /* conn */
	cn_put_le16(body + 40, 2);	  /* core */
	cn_put_le32(body + 44, (uint32_t)-ENOSPC); /* status */
	cn_put_le32(body + 48, 4096);	  /* len */
	memcpy(body + 56, &k, sizeof(k)); /* key */
	memset(body + 88, 0xee, 16);	  /* a future field */
	assert_int_equal(cn_trace_writer_open(&cfg, &w), 0);
	assert_int_equal(cn_trace_writer_op(w, CN_TRACE_delete, &op, &k), 0);
	assert_int_equal(cn_trace_writer_raw(w, 999, junk, sizeof(junk)), 0);
	assert_int_equal(cn_trace_writer_raw(w, 30, NULL, 0), 0);
	assert_int_equal(cn_trace_writer_raw(w, CN_TRACE_store, body, sizeof(body)), 0);
	assert_int_equal(cn_trace_writer_raw(w, 1, junk, CN_TRACE_MAX_REC), -E2BIG);
	assert_int_equal(cn_trace_writer_op(w, 99, &op, &k), -EINVAL);
	assert_int_equal(cn_trace_writer_close(&w, NULL), 0);

	assert_int_equal(cn_trace_reader_open(path, &r, err, sizeof(err)), 0);
	assert_int_equal(cn_trace_reader_next(r, &rec), 1);
	assert_int_equal(rec.kind, CN_TRACE_delete);
	assert_int_equal(rec.op.op_id, 9);
	assert_int_equal(rec.op.val, 0); /* a delete carries no value */
	assert_memory_equal(rec.keys, &k, sizeof(k));
	assert_int_equal(cn_trace_reader_next(r, &rec), 1);
	assert_int_equal(rec.kind, CN_TRACE_store);
	assert_int_equal(rec.op.mono_ns, 1234);
	assert_int_equal(rec.op.wall_ns, 5678);
	assert_int_equal(rec.op.dur_ns, 34);
	assert_int_equal(rec.op.op_id, 99);
	assert_int_equal(rec.op.conn, 7);
	assert_int_equal(rec.op.core, 2);
	assert_int_equal(rec.op.status, -ENOSPC);
	assert_int_equal(rec.op.val, 4096);
	assert_int_equal(rec.len, 12 + sizeof(body));
	assert_memory_equal(rec.keys, &k, sizeof(k));
	assert_int_equal(cn_trace_reader_skipped(r), 2);
	assert_int_equal(cn_trace_reader_next(r, &rec), 1);
	assert_int_equal(rec.kind, CN_TRACE_END);
	assert_int_equal(rec.records, 1); /* the raw STORE is not counted by the writer */
	assert_true(cn_trace_reader_complete(r));
	cn_trace_reader_close(&r);
	unlink(path);
}

/*
 * Recompute every record's CRC after the header changed, from the
 * definition in docs/trace-format.md: CRC32C of the previous CRC (LE, the
 * header's for the first record), the record's bytes 0..7 and 12..len-1.
 */
static void rechain(uint8_t *b, size_t len, size_t hdr_len)
{
	uint32_t prev = cn_get_le32(b + hdr_len - 4);
	uint8_t *tmp = malloc(CN_TRACE_MAX_REC + 4);

	for (size_t off = hdr_len; off + 12 <= len;) {
		uint32_t rl = cn_get_le32(b + off);

		cn_put_le32(tmp, prev);
		memcpy(tmp + 4, b + off, 8);
		memcpy(tmp + 12, b + off + 12, rl - 12);
		prev = cn_trace_crc32c(tmp, rl);
		cn_put_le32(b + off + 8, prev);
		off += rl;
	}
	free(tmp);
}

static int open_bytes(const uint8_t *b, size_t len, char *err, size_t errlen)
{
	struct cn_trace_reader *r = NULL;
	int n = open_mem(b, len, &r, err, errlen);

	cn_trace_reader_close(&r);
	return n;
}

static void test_bad_headers(void **state)
{
	struct sample s;
	uint8_t *b;
	char err[256];

	(void)state;
	make_sample(&s, 30, 2, true);
	b = malloc(s.len + 64);
	assert_non_null(b);

	assert_int_equal(open_bytes(s.bytes, 0, err, sizeof(err)), -ENODATA);
	assert_int_equal(open_bytes(s.bytes, 100, err, sizeof(err)), -ENODATA);
	assert_non_null(strstr(err, "ends inside the header"));

	memcpy(b, s.bytes, s.len);
	b[0] = 'X';
	assert_int_equal(open_bytes(b, s.len, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "not a cachenode trace file"));

	memcpy(b, s.bytes, s.len);
	cn_put_le16(b + 8, 2);
	assert_int_equal(open_bytes(b, s.len, err, sizeof(err)), -EPROTONOSUPPORT);
	assert_non_null(strstr(err, "version 2 is not supported"));

	memcpy(b, s.bytes, s.len);
	b[120] ^= 1; /* in the node id: only the checksum notices */
	assert_int_equal(open_bytes(b, s.len, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "checksum"));

	memcpy(b, s.bytes, s.len);
	cn_put_le16(b + 10, 100);
	assert_int_equal(open_bytes(b, s.len, err, sizeof(err)), -EBADMSG);

	/* a longer header from a future writer: its extra bytes are skipped */
	memcpy(b, s.bytes, 252);
	memset(b + 252, 0x5a, 16);
	cn_put_le16(b + 10, 272);
	cn_put_le32(b + 268, cn_trace_crc32c(b, 268));
	memcpy(b + 272, s.bytes + 256, s.len - 256);
	rechain(b, s.len + 16, 272);
	{
		int how;

		assert_int_equal(check_prefix(&s, b, s.len + 16, &how), s.n);
		assert_int_equal(how, 1);
	}
	free(b);
	free_sample(&s);
}

/* Offsets where each record ends (the END record not counted). */
static unsigned record_ends(const struct sample *s, size_t *ends)
{
	size_t off = CN_TRACE_HDR_LEN;
	unsigned n = 0;

	while (off < s->len) {
		uint32_t len = cn_get_le32(s->bytes + off);

		if (cn_get_le16(s->bytes + off + 4) == CN_TRACE_END)
			break;
		off += len;
		ends[n++] = off;
	}
	return n;
}

/* A file cut at any byte reads as exactly the records wholly before the cut. */
static void test_truncated_everywhere(void **state)
{
	struct sample s;
	size_t *ends;
	unsigned nends;

	(void)state;
	make_sample(&s, 60, 3, true);
	ends = calloc(s.n + 1, sizeof(*ends));
	nends = record_ends(&s, ends);
	assert_int_equal(nends, s.n);
	for (size_t cut = 0; cut <= s.len; cut++) {
		unsigned whole = 0;
		int how;
		unsigned got = check_prefix(&s, s.bytes, cut, &how);

		while (whole < nends && ends[whole] <= cut)
			whole++;
		if (cut < CN_TRACE_HDR_LEN) {
			assert_int_equal(how, -ENODATA);
		} else if (cut == s.len) {
			assert_int_equal(how, 1);
			assert_int_equal(got, s.n);
		} else {
			assert_int_equal(how, 0);
			assert_int_equal(got, whole);
		}
	}
	free(ends);
	free_sample(&s);
}

static void test_zero_tail_and_corruption(void **state)
{
	struct sample s, open_file;
	uint8_t *b;
	size_t ends[40];
	int how;

	(void)state;
	/* not closed (no END) and zero-filled after the data: cut short, not corrupt */
	make_sample(&open_file, 30, 4, false);
	b = calloc(1, open_file.len + 8192);
	memcpy(b, open_file.bytes, open_file.len);
	assert_int_equal(check_prefix(&open_file, b, open_file.len + 8192, &how), open_file.n);
	assert_int_equal(how, 0);
	assert_int_equal(check_prefix(&open_file, b, open_file.len + 5, &how), open_file.n);
	assert_int_equal(how, 0);
	b[open_file.len + 4000] = 1; /* not all zero: garbage after the data is corrupt */
	assert_int_equal(check_prefix(&open_file, b, open_file.len + 8192, &how), open_file.n);
	assert_int_equal(how, -EBADMSG);
	free(b);
	free_sample(&open_file);

	/* one flipped bit inside record 10: records 0..9, then a checksum error */
	make_sample(&s, 30, 5, true);
	record_ends(&s, ends);
	b = malloc(s.len);
	memcpy(b, s.bytes, s.len);
	b[ends[9] + 13] ^= 0x10;
	assert_int_equal(check_prefix(&s, b, s.len, &how), 10);
	assert_int_equal(how, -EBADMSG);
	/* an impossible length in record 10 */
	memcpy(b, s.bytes, s.len);
	cn_put_le32(b + ends[9], 5);
	assert_int_equal(check_prefix(&s, b, s.len, &how), 10);
	assert_int_equal(how, -EBADMSG);
	/* bytes after the END record */
	b = realloc(b, s.len + 1);
	memcpy(b, s.bytes, s.len);
	b[s.len] = 0;
	assert_int_equal(check_prefix(&s, b, s.len + 1, &how), s.n);
	assert_int_equal(how, -EBADMSG);
	free(b);
	free_sample(&s);
}

/*
 * The reader against random damage: flipped bits, overwritten bytes and
 * length fields, cuts, insertions, deletions, duplicated and swapped spans.
 * Whatever happens, it must return a prefix of the original records and end
 * with 0 or a clean error, and never read out of bounds (ASan in make test);
 * a file it reads as complete must be the original. Deterministic seed;
 * CN_TRACE_FUZZ_ITERS overrides the count.
 */
static void test_fuzz_reader(void **state)
{
	struct sample s;
	uint64_t seed = UINT64_C(0x5eed5eed), iters = 300000;
	const char *env = getenv("CN_TRACE_FUZZ_ITERS");
	size_t ends[100];
	unsigned outcome[3] = {0};
	uint8_t *b;
	struct timespec t0, t1;

	(void)state;
	if (env != NULL)
		iters = strtoull(env, NULL, 10);
	make_sample(&s, 80, 6, true);
	record_ends(&s, ends);
	b = malloc(2 * s.len + 64);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint64_t it = 0; it < iters; it++) {
		size_t len = s.len;
		unsigned muts = 1 + (unsigned)(rng_next(&seed) % 3);
		int how;

		memcpy(b, s.bytes, s.len);
		for (unsigned m = 0; m < muts && len > 0; m++) {
			uint64_t x = rng_next(&seed);
			size_t at = (size_t)(x >> 16) % len;

			switch (x % 8) {
			case 0: /* flip a bit */
				b[at] ^= (uint8_t)(1u << ((x >> 8) % 8));
				break;
			case 1: /* random byte */
				b[at] = (uint8_t)(x >> 40);
				break;
			case 2: { /* a length field: at a record start, a random or edge value */
				size_t rec = ends[(x >> 8) % (s.n - 1)];
				static const uint32_t edge[] = {0, 11, 12, 13, 0xffffffffu,
								CN_TRACE_MAX_REC,
								CN_TRACE_MAX_REC + 1};

				if (rec + 4 <= len)
					cn_put_le32(b + rec, (x >> 30) & 1 ? (uint32_t)(x >> 33)
									  : edge[(x >> 34) % 7]);
				break;
			}
			case 3: /* cut */
				len = at;
				break;
			case 4: { /* insert up to 8 random bytes */
				size_t n = 1 + (x >> 8) % 8;

				memmove(b + at + n, b + at, len - at);
				for (size_t i = 0; i < n; i++)
					b[at + i] = (uint8_t)rng_next(&seed);
				len += n;
				break;
			}
			case 5: { /* delete up to 64 bytes */
				size_t n = 1 + (x >> 8) % 64;

				n = n > len - at ? len - at : n;
				memmove(b + at, b + at + n, len - at - n);
				len -= n;
				break;
			}
			case 6: { /* duplicate a span (a record written twice) */
				size_t n = 1 + (x >> 8) % 256;

				n = n > len - at ? len - at : n;
				n = n > s.len + 64 - (len - s.len) ? 0 : n;
				if (len + n <= 2 * s.len + 64) {
					memmove(b + at + n, b + at, len - at);
					len += n;
				}
				break;
			}
			default: { /* swap two records' worth of bytes */
				size_t o = ends[(x >> 8) % (s.n - 1)], n = 64;

				if (o + n <= len && at + n <= len && (at + n <= o || o + n <= at)) {
					uint8_t tmp[64];

					memcpy(tmp, b + at, n);
					memcpy(b + at, b + o, n);
					memcpy(b + o, tmp, n);
				}
				break;
			}
			}
		}
		check_prefix(&s, b, len, &how);
		if (how == 1) {
			assert_int_equal(len, s.len);
			assert_memory_equal(b, s.bytes, s.len);
		}
		outcome[how == 1 ? 0 : how == 0 ? 1 : 2]++;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("fuzz: %" PRIu64 " damaged files in %.2f s: %u intact, %u cut short, %u errors\n",
	       iters, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
	       outcome[0], outcome[1], outcome[2]);
	/* the mutations reach every outcome */
	assert_true(outcome[1] > 0 && outcome[2] > 0);
	free(b);
	free_sample(&s);
}

static void test_rotation(void **state)
{
	char path[128], part[160];
	struct cn_trace_writer_cfg cfg = {.path = path, .max_size = 64u << 10, .meta = &test_meta};
	struct cn_trace_writer_stats st;
	struct cn_trace_writer *w;
	struct cn_key keys[16];
	uint64_t trace_id = 0, read = 0;
	uint32_t seq = 0;

	(void)state;
	tmp_path(path, sizeof(path), "rot");
	assert_int_equal(cn_trace_writer_open(&cfg, &w), 0);
	for (unsigned i = 0; i < 2000; i++) {
		struct cn_trace_op op = {.mono_ns = i, .op_id = i, .nkeys = 16, .val = i % 17};

		for (unsigned k = 0; k < 16; k++)
			keys[k] = key_of(i * 16 + k);
		assert_int_equal(cn_trace_writer_op(w, CN_TRACE_lookup, &op, keys), 0);
	}
	cn_trace_writer_stats(w, &st);
	assert_int_equal(cn_trace_writer_close(&w, &st), 0);
	assert_true(st.files > 10);
	assert_int_equal(st.records, 2000);
	for (;;) {
		struct cn_trace_reader *r;
		struct cn_trace_rec rec;
		struct stat sb;
		char err[256];

		if (seq == 0)
			snprintf(part, sizeof(part), "%s", path);
		else
			snprintf(part, sizeof(part), "%s.%u", path, seq);
		assert_int_equal(stat(part, &sb), 0);
		assert_true(sb.st_size <= 64 << 10);
		assert_int_equal(cn_trace_reader_open(part, &r, err, sizeof(err)), 0);
		if (seq == 0)
			trace_id = cn_trace_reader_header(r)->trace_id;
		assert_int_equal(cn_trace_reader_header(r)->trace_id, trace_id);
		assert_int_equal(cn_trace_reader_header(r)->file_seq, seq);
		while (cn_trace_reader_next(r, &rec) == 1 && rec.kind != CN_TRACE_END) {
			struct cn_key k0 = key_of(read * 16), k15 = key_of(read * 16 + 15);

			assert_int_equal(rec.op.op_id, read);
			assert_memory_equal(&rec.keys[0], &k0, sizeof(k0));
			assert_memory_equal(&rec.keys[15], &k15, sizeof(k15));
			read++;
		}
		assert_int_equal(rec.kind, CN_TRACE_END);
		assert_true(cn_trace_reader_complete(r));
		cn_trace_reader_close(&r);
		unlink(part);
		if (rec.next_seq == 0)
			break;
		assert_int_equal(rec.next_seq, seq + 1);
		seq++;
	}
	assert_int_equal(read, 2000);
	assert_int_equal(seq + 1, st.files);
	/* one record bigger than a rotated file could be is refused at open: max_size >= 64K */
	cfg.max_size = 1000;
	assert_int_equal(cn_trace_writer_open(&cfg, &w), -EINVAL);
}

static void test_writer_errors(void **state)
{
	char path[128];
	struct cn_trace_writer_cfg cfg = {.path = "/nonexistent-dir/x.trace", .meta = &test_meta};
	struct cn_trace_writer_stats st;
	struct cn_trace_writer *w;
	struct cn_key keys[32];
	struct rlimit old, lim;
	struct sample s = {0};
	int r = 0, how;
	unsigned written = 0;

	(void)state;
	assert_int_equal(cn_trace_writer_open(&cfg, &w), -ENOENT);
	if (access("/dev/full", W_OK) == 0) {
		cfg.path = "/dev/full";
		assert_int_equal(cn_trace_writer_open(&cfg, &w), -ENOSPC);
	}

	/* the file system refuses more bytes half-way: what is written stays readable */
	tmp_path(path, sizeof(path), "full");
	cfg.path = path;
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(cn_trace_writer_open(&cfg, &w), 0);
	lim = old;
	lim.rlim_cur = 100000;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	s.r = calloc(200, sizeof(*s.r));
	for (unsigned i = 0; i < 200 && r == 0; i++) {
		struct exp_rec *e = &s.r[i];

		e->kind = CN_TRACE_lookup;
		e->op = (struct cn_trace_op){.mono_ns = i, .op_id = i, .nkeys = 32, .val = 3};
		for (unsigned k = 0; k < 32; k++)
			keys[k] = e->keys[k % 64] = key_of(i + k);
		r = cn_trace_writer_op(w, CN_TRACE_lookup, &e->op, keys);
		if (r == 0) {
			written++;
			if (i % 10 == 9)
				r = cn_trace_writer_flush(w);
		}
	}
	s.n = written;
	assert_int_equal(r, -EFBIG);
	assert_int_equal(cn_trace_writer_op(w, CN_TRACE_lookup, &s.r[0].op, keys), -EFBIG);
	cn_trace_writer_stats(w, &st);
	/* every record is counted once: written before the failure, or lost */
	assert_int_equal(st.records + st.errors, written + 1);
	assert_true(st.records > 0 && st.errors > 1);
	assert_int_equal(st.records % 10, 0); /* whole flushes only */
	assert_int_equal(cn_trace_writer_close(&w, &st), -EFBIG);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	s.bytes = slurp(path, &s.len);
	assert_true(s.len <= 100000);
	/*
	 * every record that reached the file reads back (those of the failed
	 * write that made it whole too); the file was cut short
	 */
	assert_true(check_prefix(&s, s.bytes, s.len, &how) >= st.records);
	assert_int_equal(how, 0);
	unlink(path);
	free_sample(&s);
}

/* ---- the recorder: trace rings, the drain, the engine's records ---- */

static unsigned tel_seq;

static struct cn_tel *tel_new(unsigned ncores, bool events, unsigned trace_ring, const char *path,
			      struct cn_trace_writer **wout)
{
	char name[16];
	struct cn_tel_cfg cfg = {
		.ncores = ncores, .enabled = events, .trace_ring_size = trace_ring,
		.name = name, .socket_id = -1,
	};
	struct cn_trace_writer_cfg wcfg = {.path = path, .meta = &test_meta};
	struct cn_trace_writer *w;
	struct cn_tel *t;

	snprintf(name, sizeof(name), "tt%u", tel_seq++);
	assert_int_equal(cn_tel_create(&cfg, &t), 0);
	assert_int_equal(t->tracing, trace_ring != 0);
	if (path != NULL) {
		assert_int_equal(cn_trace_writer_open(&wcfg, &w), 0);
		assert_int_equal(cn_tel_trace_attach(t, w), 0);
		if (wout != NULL)
			*wout = w;
	}
	return t;
}

/* Read every record of @path into @out (max @cap); returns how many; *lost gets LOST totals. */
static unsigned read_all(const char *path, struct exp_rec *out, unsigned cap, uint64_t *lost,
			 bool *complete)
{
	struct cn_trace_reader *r;
	struct cn_trace_rec rec;
	char err[256];
	unsigned n = 0;

	*lost = 0;
	assert_int_equal(cn_trace_reader_open(path, &r, err, sizeof(err)), 0);
	while (cn_trace_reader_next(r, &rec) == 1) {
		if (rec.kind == CN_TRACE_LOST) {
			*lost += rec.lost;
			continue;
		}
		if (rec.kind == CN_TRACE_END)
			continue;
		assert_true(n < cap);
		out[n].kind = rec.kind;
		out[n].op = rec.op;
		assert_true(rec.op.nkeys <= 64);
		memcpy(out[n].keys, rec.keys, rec.op.nkeys * sizeof(rec.keys[0]));
		n++;
	}
	*complete = cn_trace_reader_complete(r);
	cn_trace_reader_close(&r);
	return n;
}

static void expect(const struct exp_rec *g, unsigned kind, unsigned core, const struct cn_key *k,
		   uint32_t nkeys, uint32_t val, int32_t status)
{
	assert_int_equal(g->kind, kind);
	assert_int_equal(g->op.core, core);
	assert_int_equal(g->op.op_id >> 48, core); /* the telemetry session id of that core */
	assert_int_equal(g->op.nkeys, nkeys);
	assert_int_equal(g->op.val, val);
	assert_int_equal(g->op.status, status);
	assert_int_equal(g->op.conn, 0);
	assert_memory_equal(g->keys, k, nkeys * sizeof(*k));
}

/* Every engine operation leaves one record with its keys, sizes and status. */
static void test_engine_records(void **state)
{
	char path[128];
	struct cn_tel *t;
	struct cn_engine *e;
	struct cn_engine_cfg ecfg = {
		.l1_size = 16u << 20, .max_chunk = 64u << 10, .ncores = 2, .socket_id = -1,
		.name = "trace_eng",
	};
	struct cn_l1_ref ref, r4, r5;
	struct cn_key k[6], batch[3];
	struct exp_rec got[32];
	struct cn_tel_drain_stats ds;
	struct timespec now;
	uint32_t prefix;
	uint64_t lost, mono_now;
	bool complete;
	size_t flen;
	uint8_t *bytes;
	unsigned n;

	(void)state;
	tmp_path(path, sizeof(path), "engine");
	for (unsigned i = 0; i < 6; i++)
		k[i] = key_of(100 + i);
	t = tel_new(2, true, 4096, path, NULL);
	ecfg.tel = t;
	assert_int_equal(cn_engine_create(&ecfg, &e), 0);

	assert_int_equal(cn_engine_store_begin(e, 0, &k[1], 1000, &ref), 0);
	memset(ref.data, 1, 1000);
	assert_int_equal(cn_engine_store_commit(e, 0, &ref), 0);
	assert_int_equal(cn_engine_store_begin(e, 0, &k[1], 500, &ref), -EEXIST);
	assert_int_equal(cn_engine_store_begin(e, 0, &k[2], 2000, &ref), 0);
	cn_engine_store_abort(e, 0, &ref);
	assert_int_equal(cn_engine_store_begin(e, 0, &k[3], 70000, &ref), -E2BIG);
	batch[0] = k[1], batch[1] = k[2], batch[2] = k[1];
	assert_int_equal(cn_engine_lookup(e, 0, batch, 3, &prefix, NULL), 0);
	assert_int_equal(prefix, 1);
	assert_int_equal(cn_engine_retrieve_pin(e, 0, &k[1], &ref), 0);
	cn_engine_unpin(e, 0, &ref);
	assert_int_equal(cn_engine_retrieve_pin(e, 0, &k[2], &ref), -ENOENT);
	assert_int_equal(cn_engine_delete(e, 1, &k[1]), 0);
	assert_int_equal(cn_engine_delete(e, 1, &k[1]), -ENOENT);
	/* a batch: both reserved, committed in the other order */
	assert_int_equal(cn_engine_store_begin(e, 1, &k[4], 4096, &r4), 0);
	assert_int_equal(cn_engine_store_begin(e, 1, &k[5], 8192, &r5), 0);
	assert_int_equal(cn_engine_store_commit(e, 1, &r5), 0);
	assert_int_equal(cn_engine_store_commit(e, 1, &r4), 0);
	assert_int_equal(CN_STAT_GET(&t->core[0].st, trace_emitted), 7);
	assert_int_equal(CN_STAT_GET(&t->core[1].st, trace_emitted), 4);
	assert_int_equal(cn_tel_trace_depth(t, 0), 7 * 2 + 6 + 3); /* headers, keys, batch */

	cn_tel_stop(t); /* the last drain pass writes them; the file gets its END */
	clock_gettime(CLOCK_MONOTONIC, &now);
	mono_now = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	cn_tel_drain_stats(t, &ds);
	assert_int_equal(ds.trace_written, 11);
	assert_int_equal(ds.trace_files, 1);
	assert_int_equal(ds.trace_errors, 0);
	bytes = slurp(path, &flen);
	free(bytes);
	assert_int_equal(ds.trace_bytes, flen);

	n = read_all(path, got, 32, &lost, &complete);
	assert_int_equal(n, 11);
	assert_int_equal(lost, 0);
	assert_true(complete);
	/* core 0's ring is drained before core 1's: each core's records in its order */
	expect(&got[0], CN_TRACE_store, 0, &k[1], 1, 1000, 0);
	expect(&got[1], CN_TRACE_store, 0, &k[1], 1, 500, -EEXIST);
	expect(&got[2], CN_TRACE_store, 0, &k[2], 1, 2000, -ECONNABORTED);
	expect(&got[3], CN_TRACE_store, 0, &k[3], 1, 70000, -E2BIG);
	expect(&got[4], CN_TRACE_lookup, 0, batch, 3, 1, 0);
	expect(&got[5], CN_TRACE_retrieve, 0, &k[1], 1, 1000, 0);
	expect(&got[6], CN_TRACE_retrieve, 0, &k[2], 1, 0, -ENOENT);
	expect(&got[7], CN_TRACE_delete, 1, &k[1], 1, 0, 0);
	expect(&got[8], CN_TRACE_delete, 1, &k[1], 1, 0, -ENOENT);
	expect(&got[9], CN_TRACE_store, 1, &k[5], 1, 8192, 0);
	expect(&got[10], CN_TRACE_store, 1, &k[4], 1, 4096, 0);
	/* the store's op id is its span's: the one begun first (k4) has the smaller id */
	assert_true(got[10].op.op_id < got[9].op.op_id);
	/* reserve..commit/abort and pin..unpin have a duration; failures and instants none */
	for (unsigned i = 0; i < n; i++) {
		bool span = (got[i].kind == CN_TRACE_store &&
			     (got[i].op.status == 0 || got[i].op.status == -ECONNABORTED)) ||
			    (got[i].kind == CN_TRACE_retrieve && got[i].op.status == 0);

		assert_true(span ? got[i].op.dur_ns > 0 : got[i].op.dur_ns == 0);
	}
	/* k4 was reserved before k5 and committed after it: it started first */
	assert_true(got[10].op.mono_ns - got[10].op.dur_ns < got[9].op.mono_ns - got[9].op.dur_ns);
	assert_true(got[10].op.mono_ns > got[9].op.mono_ns);
	for (unsigned i = 0; i < n; i++) {
		assert_true(got[i].op.mono_ns <= mono_now);
		assert_true(i == 0 || i == 7 || got[i].op.mono_ns >= got[i - 1].op.mono_ns);
		assert_true(got[i].op.wall_ns > UINT64_C(1600000000) * 1000000000u);
	}
	cn_engine_destroy(&e);
	cn_tel_destroy(&t);
	unlink(path);
}

/* A full ring drops whole records, counts them, and the file says how many. */
static void test_ring_drops(void **state)
{
	char path[128];
	struct cn_tel *t;
	struct cn_key keys[100];
	struct exp_rec got[64];
	struct cn_tel_drain_stats ds;
	uint64_t lost;
	bool complete;
	unsigned n;

	(void)state;
	tmp_path(path, sizeof(path), "drops");
	for (unsigned i = 0; i < 100; i++)
		keys[i] = key_of(i);
	/* events off: the trace still records (its own drain duty) */
	t = tel_new(1, false, 64, path, NULL);
	assert_false(t->enabled);
	for (unsigned i = 0; i < 40; i++) /* 3 slots each; 63 usable: 21 fit */
		cn_tel_trace(t, 0, CN_TRACE_delete, i, &keys[i], 1, 0, 0, 0);
	cn_tel_trace(t, 0, CN_TRACE_lookup, 40, keys, 100, 0, 0, 0); /* never fits */
	assert_int_equal(CN_STAT_GET(&t->core[0].st, trace_emitted), 21);
	assert_int_equal(CN_STAT_GET(&t->core[0].st, trace_drops), 20);
	assert_int_equal(CN_STAT_GET(&t->core[0].st, events), 0);
	assert_true(cn_tel_drain_once(t) > 0);
	for (unsigned i = 0; i < 5; i++)
		cn_tel_trace(t, 0, CN_TRACE_delete, 50 + i, &keys[50 + i], 1, 0, -ENOENT, 0);
	cn_tel_stop(t);
	cn_tel_drain_stats(t, &ds);
	assert_int_equal(ds.trace_written, 26);
	n = read_all(path, got, 64, &lost, &complete);
	assert_int_equal(n, 26);
	assert_int_equal(lost, 20);
	assert_true(complete);
	for (unsigned i = 0; i < n; i++) {
		unsigned want = i < 21 ? i : 50 + (i - 21);

		assert_int_equal(got[i].op.op_id, want);
		assert_memory_equal(got[i].keys, &keys[want], sizeof(keys[0]));
	}
	cn_tel_destroy(&t);
	unlink(path);
}

/*
 * Records of every size through a small ring, many times round: a record
 * split by the ring's end (zero-copy enqueue in two parts) or by the drain's
 * burst comes out whole and in order.
 */
static void test_ring_wraparound(void **state)
{
	char path[128];
	struct cn_tel *t;
	struct cn_key *keys = malloc(1024 * sizeof(*keys));
	struct cn_trace_reader *r;
	struct cn_trace_rec rec;
	uint64_t seed = 77, check = 77, total_keys = 0;
	char err[256];
	unsigned n = 0;

	(void)state;
	tmp_path(path, sizeof(path), "wrap");
	t = tel_new(1, true, 4096, path, NULL);
	for (unsigned i = 0; i < 1500; i++) {
		uint32_t nk = (uint32_t)(rng_next(&seed) % 1025);

		for (uint32_t k = 0; k < nk; k++)
			keys[k] = key_of(i * 2048 + k);
		if (cn_tel_trace_depth(t, 0) + nk + 2 > 4095)
			cn_tel_drain_once(t);
		cn_tel_trace(t, 0, CN_TRACE_lookup, i, keys, nk, nk / 2, 0, rte_rdtsc() - 1000);
		total_keys += nk;
	}
	assert_int_equal(CN_STAT_GET(&t->core[0].st, trace_drops), 0);
	cn_tel_stop(t);
	assert_int_equal(cn_trace_reader_open(path, &r, err, sizeof(err)), 0);
	while (cn_trace_reader_next(r, &rec) == 1 && rec.kind != CN_TRACE_END) {
		uint32_t nk = (uint32_t)(rng_next(&check) % 1025);

		assert_int_equal(rec.kind, CN_TRACE_lookup);
		assert_int_equal(rec.op.op_id, n);
		assert_int_equal(rec.op.nkeys, nk);
		assert_int_equal(rec.op.val, nk / 2);
		for (uint32_t k = 0; k < nk; k++) {
			struct cn_key want = key_of(n * 2048 + k);

			assert_memory_equal(&rec.keys[k], &want, sizeof(want));
		}
		n++;
	}
	assert_int_equal(n, 1500);
	assert_true(total_keys > 1500 * 400);
	cn_trace_reader_close(&r);
	cn_tel_destroy(&t);
	free(keys);
	unlink(path);
}

static void test_attach_rules(void **state)
{
	char path[128];
	struct cn_trace_writer_cfg wcfg = {.path = path, .meta = &test_meta};
	struct cn_trace_writer *w, *w2;
	struct cn_tel *t;

	(void)state;
	tmp_path(path, sizeof(path), "attach");
	assert_int_equal(cn_trace_writer_open(&wcfg, &w), 0);
	t = tel_new(1, true, 0, NULL, NULL);
	assert_int_equal(cn_tel_trace_attach(t, w), -EINVAL); /* no trace rings */
	cn_tel_trace(t, 0, CN_TRACE_delete, 1, NULL, 0, 0, 0, 0); /* one branch: nothing */
	cn_tel_destroy(&t);

	t = tel_new(1, true, 64, NULL, NULL);
	assert_int_equal(cn_tel_start(t), -EINVAL); /* rings but nowhere to write */
	assert_int_equal(cn_tel_trace_attach(t, w), 0);
	assert_int_equal(cn_trace_writer_open(&wcfg, &w2), 0);
	assert_int_equal(cn_tel_trace_attach(t, w2), -EBUSY);
	cn_trace_writer_close(&w2, NULL);
	assert_int_equal(cn_tel_start(t), 0);
	assert_int_equal(cn_tel_trace_attach(t, w), -EBUSY);
	cn_tel_destroy(&t); /* stops the drain, closes the writer */
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc_and_digest),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_extensions),
		cmocka_unit_test(test_bad_headers),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_zero_tail_and_corruption),
		cmocka_unit_test(test_fuzz_reader),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_writer_errors),
		cmocka_unit_test(test_engine_records),
		cmocka_unit_test(test_ring_drops),
		cmocka_unit_test(test_ring_wraparound),
		cmocka_unit_test(test_attach_rules),
	};
	int r;

	if (cn_test_eal_init("test_trace") < 0)
		return 1;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/cn_trace_test.%d", (int)getpid());
	if (mkdir(tmpdir, 0700) < 0) {
		perror(tmpdir);
		return 1;
	}
	r = cmocka_run_group_tests(tests, NULL, NULL);
	rmdir(tmpdir);
	rte_eal_cleanup();
	return r;
}
