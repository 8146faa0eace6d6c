/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trace recording and replay end to end: a node records a known workload
 * (--trace-output); cachenode-replay runs it again in-process (--local) and
 * against a fresh node, and both give the counts and hit rates the client
 * saw while recording, exactly; a smaller --l1-size lowers the hit rate;
 * files cut short, corrupt, of another version or of another recording are
 * handled as docs/trace-format.md says; a killed node's file replays up to
 * its last record; drops are counted in the file; rotation is followed;
 * configuration mismatches warn, or refuse with --strict.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include <cachenode/client.h>
#include "daemon.h"

#define KiB 1024u

static char dir[64];

/* What the client did and saw while the node recorded. */
struct workload {
	unsigned lookups, lookup_keys, lookup_found;
	unsigned stores, stores_ok, stores_exist;
	unsigned retrieves, retrieve_hits;
	unsigned deletes, delete_hits;
	uint64_t store_bytes, retrieve_bytes;
};

static char trace_path[128];

/* ---- running cachenode-replay ---- */

struct rout {
	int rc;
	json_t *json;	 /* stdout as JSON (--json), or NULL */
	char out[16384]; /* stdout */
	char err[8192];	 /* stderr */
};

static void replay(struct rout *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void replay(struct rout *o, const char *fmt, ...)
{
	const char *bin = getenv("CACHENODE_REPLAY");
	char args[1024], cmd[2048], errpath[128];
	va_list ap;
	FILE *f;
	size_t n;

	assert_non_null(bin);
	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	snprintf(errpath, sizeof(errpath), "%s/replay.err", dir);
	snprintf(cmd, sizeof(cmd), "%s %s 2>%s", bin, args, errpath);
	memset(o, 0, sizeof(*o));
	o->rc = cn_run(cmd, o->out, sizeof(o->out));
	f = fopen(errpath, "r");
	assert_non_null(f);
	n = fread(o->err, 1, sizeof(o->err) - 1, f);
	o->err[n] = '\0';
	fclose(f);
	if (strstr(args, "--json") != NULL && o->rc == 0) {
		o->json = json_loads(o->out, 0, NULL);
		if (o->json == NULL)
			fprintf(stderr, "not JSON:\n%s\nstderr:\n%s\n", o->out, o->err);
		assert_non_null(o->json);
	}
	if (getenv("CN_TEST_VERBOSE") != NULL)
		fprintf(stderr, "$ %s -> %d\n%s%s", cmd, o->rc, o->out, o->err);
}

static void rout_free(struct rout *o)
{
	json_decref(o->json);
	o->json = NULL;
}

/* A number from the report: "ops.lookup.count". */
static double jnum(const json_t *root, const char *path)
{
	char buf[128], *tok, *save;
	const json_t *n = root;

	snprintf(buf, sizeof(buf), "%s", path);
	for (tok = strtok_r(buf, ".", &save); tok && n; tok = strtok_r(NULL, ".", &save))
		n = json_object_get(n, tok);
	if (!json_is_number(n))
		fail_msg("%s is not a number in the report", path);
	return json_number_value(n);
}

static bool jbool(const json_t *root, const char *a, const char *b)
{
	return json_is_true(json_object_get(json_object_get(root, a), b));
}

/* ---- the recorded workload ---- */

static void must_connect(const struct cn_daemon *d, struct cn_client **c)
{
	assert_int_equal(cn_client_connect(d->addr, NULL, c), 0);
}

static uint32_t chunk_len(unsigned i)
{
	return 16 * KiB + (i * 37 % 12) * 16 * KiB; /* 16 .. 192 KiB */
}

static void store_batch(struct cn_client *c, struct workload *w, unsigned first, unsigned n,
			const char *prefix, uint8_t *data)
{
	struct cn_key keys[8];
	struct cn_buf bufs[8];
	int32_t st[8];
	struct cn_req req = {.op = CN_OP_STORE, .nkeys = n, .keys = keys, .bufs = bufs,
			     .status = st};

	for (unsigned i = 0; i < n; i++) {
		keys[i] = cn_test_key("%s-%u", prefix, first + i);
		bufs[i] = (struct cn_buf){.data = data, .len = chunk_len(first + i)};
	}
	assert_int_equal(cn_client_exec(c, &req), 0);
	for (unsigned i = 0; i < n; i++) {
		w->stores++;
		if (st[i] == CN_OK) {
			w->stores_ok++;
			w->store_bytes += bufs[i].len;
		} else {
			assert_int_equal(st[i], CN_E_EXIST);
			w->stores_exist++;
		}
	}
}

static void lookup(struct cn_client *c, struct workload *w, unsigned first, unsigned n,
		   const char *prefix)
{
	struct cn_key keys[128];
	uint32_t found;

	for (unsigned i = 0; i < n; i++)
		keys[i] = cn_test_key("%s-%u", prefix, first + i);
	assert_int_equal(cn_client_lookup(c, keys, n, &found, NULL), 0);
	w->lookups++;
	w->lookup_keys += n;
	w->lookup_found += found;
}

static void retrieve(struct cn_client *c, struct workload *w, unsigned i, const char *prefix,
		     uint8_t *buf)
{
	struct cn_key k = cn_test_key("%s-%u", prefix, i);
	uint32_t len;
	int r = cn_client_retrieve(c, &k, buf, 256 * KiB, &len);

	w->retrieves++;
	if (r == 0) {
		w->retrieve_hits++;
		w->retrieve_bytes += len;
	} else {
		assert_int_equal(r, -ENOENT);
	}
}

static void del(struct cn_client *c, struct workload *w, unsigned i, const char *prefix)
{
	struct cn_key k = cn_test_key("%s-%u", prefix, i);
	int r = cn_client_delete(c, &k);

	w->deletes++;
	if (r == 0)
		w->delete_hits++;
	else
		assert_int_equal(r, -ENOENT);
}

/*
 * Every operation and outcome: stores in batches (some of keys already
 * stored), lookups with full, partial and empty prefixes, retrieves that hit
 * and miss, deletes that hit and miss, then enough new chunks to make the
 * 16 MiB pool evict, and the same reads again.
 */
static void run_workload(const struct cn_daemon *d, struct workload *w)
{
	struct cn_client *c;
	uint8_t *data = malloc(256 * KiB), *buf = malloc(256 * KiB);

	memset(w, 0, sizeof(*w));
	for (unsigned i = 0; i < 256 * KiB; i++)
		data[i] = (uint8_t)(i * 7);
	must_connect(d, &c);
	for (unsigned i = 0; i < 60; i += 4)
		store_batch(c, w, i, 4, "w", data);
	for (unsigned i = 0; i < 80; i += 8)
		lookup(c, w, i, 8 + i % 3, "w");
	for (unsigned i = 0; i < 80; i++)
		retrieve(c, w, i, "w", buf);
	for (unsigned i = 0; i < 10; i++)
		del(c, w, i * 3, "w");
	del(c, w, 500, "w");
	store_batch(c, w, 20, 4, "w", data); /* 20 and 23 deleted above: 21, 22 exist */
	for (unsigned i = 0; i < 120; i += 6)
		store_batch(c, w, i, 6, "x", data); /* ~12 MiB more: over the high watermark */
	for (unsigned i = 0; i < 60; i++)
		retrieve(c, w, i, "w", buf);
	for (unsigned i = 0; i < 120; i += 10)
		retrieve(c, w, i, "x", buf);
	for (unsigned i = 0; i < 60; i += 6)
		lookup(c, w, i, 6, "w");
	lookup(c, w, 100, 30, "x");
	cn_client_close(&c);
	free(data);
	free(buf);
	/* the workload has every outcome, and eviction happened */
	assert_true(w->stores_exist > 0 && w->retrieve_hits > 0 && w->retrieves > w->retrieve_hits);
	assert_true(w->delete_hits > 0 && w->deletes > w->delete_hits);
	assert_true(w->lookup_found > 0 && w->lookup_found < w->lookup_keys);
}

/* The report says what the client saw, op by op. */
static void assert_matches(const json_t *j, const struct workload *w)
{
	assert_int_equal(jnum(j, "ops.lookup.count"), w->lookups);
	assert_int_equal(jnum(j, "ops.lookup.keys"), w->lookup_keys);
	assert_int_equal(jnum(j, "ops.lookup.hits"), w->lookup_found);
	assert_int_equal(jnum(j, "ops.lookup.recorded_hits"), w->lookup_found);
	assert_int_equal(jnum(j, "ops.store.count"), w->stores);
	assert_int_equal(jnum(j, "ops.store.statuses.ok.replayed"), w->stores_ok);
	assert_int_equal(jnum(j, "ops.store.statuses.ok.recorded"), w->stores_ok);
	assert_int_equal(jnum(j, "ops.store.statuses.exists.replayed"), w->stores_exist);
	assert_int_equal(jnum(j, "ops.store.bytes"), w->store_bytes);
	assert_int_equal(jnum(j, "ops.retrieve.count"), w->retrieves);
	assert_int_equal(jnum(j, "ops.retrieve.hits"), w->retrieve_hits);
	assert_int_equal(jnum(j, "ops.retrieve.recorded_hits"), w->retrieve_hits);
	assert_int_equal(jnum(j, "ops.retrieve.bytes"), w->retrieve_bytes);
	assert_int_equal(jnum(j, "ops.retrieve.recorded_bytes"), w->retrieve_bytes);
	assert_true(jnum(j, "ops.retrieve.hit_rate") == jnum(j, "ops.retrieve.recorded_hit_rate"));
	assert_true(jnum(j, "ops.lookup.hit_rate") == jnum(j, "ops.lookup.recorded_hit_rate"));
	assert_int_equal(jnum(j, "ops.delete.count"), w->deletes);
	assert_int_equal(jnum(j, "ops.delete.hits"), w->delete_hits);
	assert_int_equal(jnum(j, "ops.prefetch.count"), 0);
	assert_int_equal(jnum(j, "replay.changed"), 0);
	assert_int_equal(jnum(j, "replay.records"),
			 w->lookups + w->stores + w->retrieves + w->deletes);
	assert_true(jnum(j, "ops.retrieve.p50_us") > 0);
	assert_true(jnum(j, "ops.retrieve.p999_us") >= jnum(j, "ops.retrieve.p99_us"));
}

static const char *const node_args[] = {"--l1-size", "16M", "--max-chunk", "256K", NULL};

static struct workload recorded;

/* Record the workload once; the other cases replay this file. */
static int record_setup(void **state)
{
	struct cn_daemon d;
	const char *args[] = {"--l1-size", "16M", "--max-chunk", "256K", "--trace-output",
			      trace_path, NULL};
	uint64_t written = 0;

	snprintf(trace_path, sizeof(trace_path), "%s/recorded.trace", dir);
	if (cn_daemon_start(&d, args) < 0)
		return -1;
	run_workload(&d, &recorded);
	/* the evicting phase really evicted */
	{
		uint64_t ev = 0;

		if (cn_status_u64(d.addr, "components.engine.components.l1.counters.evictions",
				  &ev) < 0 || ev == 0)
			return -1;
	}
	for (int i = 0; i < 200 && written < 10; i++) {
		cn_status_u64(d.addr, "components.telemetry.counters.trace_written", &written);
		usleep(10000);
	}
	if (cn_daemon_stop(&d, SIGTERM, 20000) != 0)
		return -1;
	return written >= 10 ? 0 : -1;
}

static void replay_local_matches_recording(void **state)
{
	struct rout o;

	replay(&o, "--local --speed 0 --json %s", trace_path);
	assert_int_equal(o.rc, 0);
	assert_matches(o.json, &recorded);
	assert_true(jbool(o.json, "trace", "complete"));
	assert_true(jbool(o.json, "target", "matches_recording"));
	assert_int_equal(jnum(o.json, "trace.lost"), 0);
	assert_int_equal(jnum(o.json, "trace.config.l1_size"), 16 << 20);
	assert_int_equal(jnum(o.json, "trace.config.max_chunk"), 256 << 10);
	assert_int_equal(jnum(o.json, "trace.config.workers"), 1);
	assert_int_equal(jnum(o.json, "target.config.l1_capacity"),
			 jnum(o.json, "trace.config.l1_capacity"));
	assert_string_equal(o.err, "");
	rout_free(&o);

	/* the readable report says the same */
	replay(&o, "--local --speed 0 %s", trace_path);
	assert_int_equal(o.rc, 0);
	assert_non_null(strstr(o.out, "configured like the recording"));
	assert_non_null(strstr(o.out, "0 outcomes differ from the recording"));
	assert_non_null(strstr(o.out, "retrieve "));
}

/* --dump: one line per record, the header first, the END record last. */
static void dump_lists_every_record(void **state)
{
	const char *bin = getenv("CACHENODE_REPLAY");
	char cmd[512], line[40000];
	unsigned ops = 0, lookups = 0, first_lookup_keys = 0;
	FILE *p;
	bool header = false, end = false;

	snprintf(cmd, sizeof(cmd), "%s --dump %s", bin, trace_path);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(line, sizeof(line), p) != NULL) {
		unsigned n;
		char *k;

		header |= strncmp(line, "# ", 2) == 0 && strstr(line, "max_chunk 262144") != NULL;
		end |= strncmp(line, "end records ", 12) == 0;
		if (line[0] < '0' || line[0] > '9')
			continue;
		ops++;
		k = strstr(line, " keys ");
		assert_non_null(k);
		if (strstr(line, " lookup ") != NULL && lookups++ == 0)
			first_lookup_keys = sscanf(k, " keys %u", &n) == 1 ? n : 0;
	}
	assert_int_equal(pclose(p), 0);
	assert_true(header && end);
	assert_int_equal(ops, recorded.lookups + recorded.stores + recorded.retrieves +
				      recorded.deletes);
	assert_int_equal(lookups, recorded.lookups);
	assert_int_equal(first_lookup_keys, 8); /* run_workload's first lookup */
}

static void replay_on_fresh_node_matches_recording(void **state)
{
	struct cn_daemon d;
	struct rout o;
	uint64_t stores = 0;

	assert_int_equal(cn_daemon_start(&d, node_args), 0);
	replay(&o, "--node %s --transport tcp --speed 0 --json %s", d.addr, trace_path);
	assert_int_equal(o.rc, 0);
	assert_matches(o.json, &recorded);
	assert_true(jbool(o.json, "target", "matches_recording"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(o.json, "target"),
							       "kind")), "node");
	rout_free(&o);
	/* the node really served them */
	assert_int_equal(cn_status_u64(d.addr, "components.engine.requests.store_ok", &stores), 0);
	assert_int_equal(stores, recorded.stores_ok);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 20000), 0);
}

/* "What if L1 were smaller": fewer hits, the changes counted, the difference said. */
static void smaller_l1_lowers_the_hit_rate(void **state)
{
	struct rout o;

	replay(&o, "--local --speed 0 --json --l1-size 4M %s", trace_path);
	assert_int_equal(o.rc, 0);
	assert_true(jnum(o.json, "ops.retrieve.hit_rate") <
		    jnum(o.json, "ops.retrieve.recorded_hit_rate"));
	assert_true(jnum(o.json, "ops.retrieve.hits") < recorded.retrieve_hits);
	assert_true(jnum(o.json, "ops.retrieve.hit_to_miss") > 0);
	assert_true(jnum(o.json, "ops.lookup.hits") < recorded.lookup_found);
	assert_true(jnum(o.json, "replay.changed") > 0);
	assert_int_equal(jnum(o.json, "ops.retrieve.count"), recorded.retrieves);
	assert_false(jbool(o.json, "target", "matches_recording"));
	assert_non_null(strstr(o.err, "l1 size 4 MiB (recorded 16 MiB)"));
	rout_free(&o);

	replay(&o, "--local --speed 0 --json --strict --l1-size 4M %s", trace_path);
	assert_int_equal(o.rc, 3);
	assert_non_null(strstr(o.err, "refusing to replay (--strict)"));
	assert_string_equal(o.out, "");
}

/* --speed 1 keeps the recorded gaps: the replay takes about as long as the recording. */
static void speed_one_follows_recorded_time(void **state)
{
	struct rout o;
	double dur, took;

	replay(&o, "--local --json --speed 1 %s", trace_path);
	assert_int_equal(o.rc, 0);
	dur = jnum(o.json, "trace.duration_s");
	took = jnum(o.json, "replay.elapsed_s");
	assert_true(took >= dur * 0.99);
	rout_free(&o);
	/*
	 * --speed 4 is faster: never under a quarter of the recording, and under
	 * the --speed 1 run in one of three tries (a loaded machine can stall a
	 * sub-second run by as much as the gap being measured).
	 */
	for (int try = 0;; try++) {
		double t4;

		replay(&o, "--local --json --speed 4 %s", trace_path);
		assert_int_equal(o.rc, 0);
		t4 = jnum(o.json, "replay.elapsed_s");
		rout_free(&o);
		assert_true(t4 >= dur / 4 * 0.99);
		if (t4 < took)
			break;
		if (try == 2)
			fail_msg("--speed 4 took %.3f s three times, --speed 1 %.3f s", t4, took);
	}
}

static void copy_with(const char *from, const char *to, long cut, long flip_at, int ver)
{
	FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
	long n = 0;
	int ch;

	assert_non_null(in);
	assert_non_null(out);
	while ((ch = fgetc(in)) != EOF && (cut < 0 || n < cut)) {
		if (n == flip_at)
			ch ^= 0x40;
		if (ver >= 0 && n == 8)
			ch = ver;
		fputc(ch, out);
		n++;
	}
	fclose(in);
	fclose(out);
}

static void damaged_files_are_handled(void **state)
{
	char path[160];
	struct rout o;
	struct stat sb;
	const uint64_t total = recorded.lookups + recorded.stores + recorded.retrieves +
			       recorded.deletes;

	assert_int_equal(stat(trace_path, &sb), 0);
	/* cut inside the last operation record (a lookup of 30 keys; the END record is 36 bytes) */
	snprintf(path, sizeof(path), "%s/cut.trace", dir);
	copy_with(trace_path, path, (long)sb.st_size - 50, -1, -1);
	replay(&o, "--local --speed 0 --json %s", path);
	assert_int_equal(o.rc, 0);
	assert_false(jbool(o.json, "trace", "complete"));
	assert_int_equal(jnum(o.json, "trace.records"), total - 1);
	assert_int_equal(jnum(o.json, "replay.records"), total - 1);
	assert_int_equal(jnum(o.json, "replay.changed"), 0);
	assert_non_null(strstr(o.err, "cut short"));
	rout_free(&o);

	/* cut inside the header: nothing to replay */
	copy_with(trace_path, path, 100, -1, -1);
	replay(&o, "--local --speed 0 %s", path);
	assert_int_equal(o.rc, 1);
	assert_non_null(strstr(o.err, "ends inside the header"));

	/* one flipped bit in the third record's body */
	snprintf(path, sizeof(path), "%s/flip.trace", dir);
	copy_with(trace_path, path, -1, 256 + 3 * 100 + 40, -1);
	replay(&o, "--local --speed 0 %s", path);
	assert_int_equal(o.rc, 1);
	assert_non_null(strstr(o.err, "checksum mismatch"));
	assert_non_null(strstr(o.err, "flip.trace"));
	assert_string_equal(o.out, ""); /* refused before replaying anything */

	snprintf(path, sizeof(path), "%s/v9.trace", dir);
	copy_with(trace_path, path, -1, -1, 9);
	replay(&o, "--local --speed 0 %s", path);
	assert_int_equal(o.rc, 1);
	assert_non_null(strstr(o.err, "trace format version 9 is not supported"));

	replay(&o, "--local --speed 0 /etc/services");
	assert_int_equal(o.rc, 1);
	assert_non_null(strstr(o.err, "not a cachenode trace file"));
	replay(&o, "--local --speed 0 %s/absent.trace", dir);
	assert_int_equal(o.rc, 1);
	assert_non_null(strstr(o.err, "No such file"));
	replay(&o, "--local --node 127.0.0.1:1 %s", trace_path);
	assert_int_equal(o.rc, 2);
}

/* A node killed without warning leaves a file that replays up to its last record. */
static void killed_node_file_replays(void **state)
{
	struct cn_daemon d;
	char path[128];
	const char *args[] = {"--l1-size", "16M", "--max-chunk", "256K", "--trace-output", path,
			      NULL};
	struct cn_client *c;
	struct workload w = {0};
	uint8_t *data = calloc(1, 256 * KiB);
	uint64_t written = 0;
	struct rout o;

	snprintf(path, sizeof(path), "%s/killed.trace", dir);
	assert_int_equal(cn_daemon_start(&d, args), 0);
	must_connect(&d, &c);
	for (unsigned i = 0; i < 40; i += 4)
		store_batch(c, &w, i, 4, "k", data);
	for (unsigned i = 0; i < 50; i++)
		retrieve(c, &w, i, "k", data);
	cn_client_close(&c);
	/* wait until the drain has written them all, then pull the plug */
	for (int i = 0; i < 500 && written < 90; i++) {
		cn_status_u64(d.addr, "components.telemetry.counters.trace_written", &written);
		usleep(10000);
	}
	assert_int_equal(written, 90);
	assert_int_equal(cn_daemon_stop(&d, SIGKILL, 10000), 128 + SIGKILL);
	replay(&o, "--local --speed 0 --json %s", path);
	assert_int_equal(o.rc, 0);
	assert_false(jbool(o.json, "trace", "complete"));
	assert_non_null(strstr(o.err, "no end record"));
	assert_int_equal(jnum(o.json, "ops.store.count"), 40);
	assert_int_equal(jnum(o.json, "ops.retrieve.count"), 50);
	assert_int_equal(jnum(o.json, "ops.retrieve.hits"), 40);
	assert_int_equal(jnum(o.json, "replay.changed"), 0);
	rout_free(&o);
	free(data);
}

/*
 * A record larger than the trace ring is dropped on the data path and
 * counted; the file says so (and events can be off: the drain still runs).
 */
static void drops_are_counted_in_the_file(void **state)
{
	struct cn_daemon d;
	char path[128];
	const char *args[] = {"--l1-size", "16M", "--max-chunk", "256K", "--trace-output", path,
			      "--trace-ring-size", "128", "--no-telemetry", NULL};
	struct cn_client *c;
	struct workload w = {0};
	uint8_t *data = calloc(1, 256 * KiB);
	uint64_t drops = 0, events = 1;
	struct rout o;

	snprintf(path, sizeof(path), "%s/drops.trace", dir);
	assert_int_equal(cn_daemon_start(&d, args), 0);
	must_connect(&d, &c);
	store_batch(c, &w, 0, 3, "d", data);  /* 6 slots */
	lookup(c, &w, 0, 127, "d"); /* 128 slots: one more than the ring holds */
	lookup(c, &w, 0, 60, "d");  /* 61 slots: fits, whatever the drain has taken */
	cn_client_close(&c);
	assert_int_equal(cn_status_u64(d.addr, "components.telemetry.counters.trace_drops", &drops),
			 0);
	assert_int_equal(drops, 1);
	assert_int_equal(cn_status_u64(d.addr, "components.telemetry.counters.events", &events), 0);
	assert_int_equal(events, 0);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 20000), 0);
	replay(&o, "--local --speed 0 --json %s", path);
	assert_int_equal(o.rc, 0);
	assert_int_equal(jnum(o.json, "trace.lost"), 1);
	assert_true(jbool(o.json, "trace", "complete"));
	assert_int_equal(jnum(o.json, "ops.store.count"), 3);
	assert_int_equal(jnum(o.json, "ops.lookup.count"), 1);
	assert_int_equal(jnum(o.json, "ops.lookup.hits"), 3);
	assert_non_null(strstr(o.err, "dropped 1 records"));
	rout_free(&o);
	free(data);
}

static void rotation_is_followed(void **state)
{
	struct cn_daemon d;
	char path[128], part[160];
	const char *args[] = {"--l1-size", "16M", "--max-chunk", "256K", "--trace-output", path,
			      "--trace-max-size", "64K", NULL};
	struct cn_client *c;
	struct workload w = {0};
	struct rout o;
	unsigned parts = 0;

	snprintf(path, sizeof(path), "%s/rot.trace", dir);
	assert_int_equal(cn_daemon_start(&d, args), 0);
	must_connect(&d, &c);
	for (unsigned i = 0; i < 300; i++)
		lookup(c, &w, i, 64, "r"); /* 2108 bytes each */
	cn_client_close(&c);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 20000), 0);
	for (;; parts++) {
		struct stat sb;

		if (parts == 0)
			snprintf(part, sizeof(part), "%s", path);
		else
			snprintf(part, sizeof(part), "%s.%u", path, parts);
		if (stat(part, &sb) < 0)
			break;
		assert_true(sb.st_size <= 64 * 1024);
	}
	assert_true(parts >= 10);
	replay(&o, "--local --speed 0 --json %s", path);
	assert_int_equal(o.rc, 0);
	assert_int_equal(json_array_size(json_object_get(json_object_get(o.json, "trace"),
							  "files")), parts);
	assert_true(jbool(o.json, "trace", "complete"));
	assert_int_equal(jnum(o.json, "ops.lookup.count"), 300);
	assert_int_equal(jnum(o.json, "ops.lookup.keys"), 300 * 64);
	rout_free(&o);

	replay(&o, "--local --speed 0 --json --no-follow %s", path);
	assert_int_equal(o.rc, 0);
	assert_true(jnum(o.json, "ops.lookup.count") < 300);
	assert_false(jbool(o.json, "trace", "complete"));
	rout_free(&o);

	/* a part left over from another recording is not followed */
	snprintf(part, sizeof(part), "%s.2", path);
	copy_with(trace_path, part, -1, -1, -1);
	replay(&o, "--local --speed 0 --json %s", path);
	assert_int_equal(o.rc, 0);
	assert_non_null(strstr(o.err, "another recording"));
	assert_false(jbool(o.json, "trace", "complete"));
	rout_free(&o);
}

struct client_arg {
	const struct cn_daemon *d;
	const char *prefix;
	struct workload w;
};

/* One client's share: its own keys, so what it sees does not depend on the other. */
static void *client_main(void *p)
{
	struct client_arg *a = p;
	struct cn_client *c;
	uint8_t *data = calloc(1, 256 * KiB);

	must_connect(a->d, &c);
	for (unsigned round = 0; round < 5; round++) {
		for (unsigned i = 0; i < 20; i += 4)
			store_batch(c, &a->w, round * 20 + i, 4, a->prefix, data);
		for (unsigned i = 0; i < 30; i++)
			retrieve(c, &a->w, round * 20 + i, a->prefix, data);
		lookup(c, &a->w, round * 20, 24, a->prefix);
	}
	cn_client_close(&c);
	free(data);
	return NULL;
}

/*
 * Two workers, two clients at once: records from two cores' rings are merged
 * by time; every record is replayed once, and with disjoint keys each
 * client's outcomes are its own, so the totals match exactly.
 */
static void two_workers_are_merged(void **state)
{
	struct cn_daemon d;
	char path[128];
	const char *args[] = {"--l1-size", "64M", "--max-chunk", "256K", "--workers", "2",
			      "--trace-output", path, NULL};
	struct client_arg a[2] = {{.prefix = "ta"}, {.prefix = "tb"}};
	pthread_t th[2];
	struct rout o;
	uint64_t on_core[2] = {0, 0};

	snprintf(path, sizeof(path), "%s/two.trace", dir);
	assert_int_equal(cn_daemon_start(&d, args), 0);
	for (int i = 0; i < 2; i++) {
		a[i].d = &d;
		assert_int_equal(pthread_create(&th[i], NULL, client_main, &a[i]), 0);
	}
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 20000), 0);
	replay(&o, "--local --speed 0 --json %s", path);
	assert_int_equal(o.rc, 0);
	assert_int_equal(jnum(o.json, "trace.config.workers"), 2);
	assert_int_equal(jnum(o.json, "ops.store.count"), a[0].w.stores + a[1].w.stores);
	assert_int_equal(jnum(o.json, "ops.retrieve.count"), a[0].w.retrieves + a[1].w.retrieves);
	assert_int_equal(jnum(o.json, "ops.retrieve.hits"),
			 a[0].w.retrieve_hits + a[1].w.retrieve_hits);
	assert_int_equal(jnum(o.json, "ops.lookup.hits"), a[0].w.lookup_found + a[1].w.lookup_found);
	assert_int_equal(jnum(o.json, "replay.changed"), 0);
	assert_int_equal(jnum(o.json, "replay.late"), 0);
	rout_free(&o);
	/* both workers' rings reached the file */
	{
		char cmd[512], line[4096];
		FILE *p;

		snprintf(cmd, sizeof(cmd), "%s --dump %s", getenv("CACHENODE_REPLAY"), path);
		p = popen(cmd, "r");
		assert_non_null(p);
		while (fgets(line, sizeof(line), p) != NULL) {
			unsigned core;
			char *c = strstr(line, " core ");

			if (c != NULL && sscanf(c, " core %u", &core) == 1 && core < 2)
				on_core[core]++;
		}
		pclose(p);
	}
	assert_true(on_core[0] > 0 && on_core[1] > 0);
}

/* Against a node configured unlike the recording: a warning, or a refusal with --strict. */
static void node_config_mismatch(void **state)
{
	struct cn_daemon d;
	const char *args[] = {"--l1-size", "16M", "--max-chunk", "512K", NULL};
	struct rout o;

	assert_int_equal(cn_daemon_start(&d, args), 0);
	replay(&o, "--node %s --speed 0 --strict %s", d.addr, trace_path);
	assert_int_equal(o.rc, 3);
	assert_non_null(strstr(o.err, "max chunk 524288 (recorded 262144)"));
	replay(&o, "--node %s --speed 0 --json %s", d.addr, trace_path);
	assert_int_equal(o.rc, 0);
	assert_non_null(strstr(o.err, "warning: the target differs from the recording"));
	assert_false(jbool(o.json, "target", "matches_recording"));
	assert_int_equal(jnum(o.json, "ops.retrieve.count"), recorded.retrieves);
	rout_free(&o);
	assert_int_equal(cn_daemon_stop(&d, SIGTERM, 20000), 0);
}

static int rm_dir(void **state)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(replay_local_matches_recording),
		cmocka_unit_test(dump_lists_every_record),
		cmocka_unit_test(replay_on_fresh_node_matches_recording),
		cmocka_unit_test(smaller_l1_lowers_the_hit_rate),
		cmocka_unit_test(speed_one_follows_recorded_time),
		cmocka_unit_test(damaged_files_are_handled),
		cmocka_unit_test(killed_node_file_replays),
		cmocka_unit_test(drops_are_counted_in_the_file),
		cmocka_unit_test(rotation_is_followed),
		cmocka_unit_test(node_config_mismatch),
		cmocka_unit_test(two_workers_are_merged),
	};

	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "/tmp/cn_replay_test.%d", (int)getpid());
	if (mkdir(dir, 0700) < 0) {
		perror(dir);
		return 1;
	}
	return cmocka_run_group_tests_name("replay", tests, record_setup, rm_dir);
}
