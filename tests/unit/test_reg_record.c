/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The registry's data format: redis:// URLs (credentials, IPv6, db, and the
 * refusals), key names, a record written and read back field for field, the
 * garbage a reader must refuse (with the reason it gives), and the liveness
 * rule.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cn_reg_record.h"

static void urls(void **state)
{
	struct cn_reg_url u;
	char why[160];

	assert_int_equal(cn_reg_url_parse("redis://10.0.0.1", &u, why, sizeof(why)), 0);
	assert_string_equal(u.host, "10.0.0.1");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	assert_string_equal(u.password, "");
	assert_string_equal(u.redacted, "redis://10.0.0.1:6379/0");

	assert_int_equal(cn_reg_url_parse("redis://:s%40cret@redis.svc:7000/3", &u, why,
					  sizeof(why)), 0);
	assert_string_equal(u.host, "redis.svc");
	assert_int_equal(u.port, 7000);
	assert_int_equal(u.db, 3);
	assert_string_equal(u.user, "");
	assert_string_equal(u.password, "s@cret"); /* percent-decoded */
	assert_null(strstr(u.redacted, "cret"));
	assert_string_equal(u.redacted, "redis://redis.svc:7000/3");

	assert_int_equal(cn_reg_url_parse("redis://app:pw@[::1]:6380/", &u, why, sizeof(why)), 0);
	assert_string_equal(u.host, "::1");
	assert_string_equal(u.user, "app");
	assert_string_equal(u.password, "pw");
	assert_int_equal(u.port, 6380);
	assert_string_equal(u.redacted, "redis://[::1]:6380/0");

	static const char *const bad[] = {
		"http://h:1",	       "redis://",	       "redis://:6379",
		"redis://h:0",	       "redis://h:65536",      "redis://h:12x",
		"redis://h/x",	       "redis://h/70000",      "redis://pw@h",
		"redis://:@h",	       "redis://:%zz@h",	"redis://[::1",
		"redis://h st:1",      "redis://:%00@h",	NULL,
	};
	for (const char *const *b = bad; *b; b++) {
		why[0] = '\0';
		if (cn_reg_url_parse(*b, &u, why, sizeof(why)) != -EINVAL)
			fail_msg("'%s' accepted", *b);
		assert_true(why[0] != '\0');
	}
	assert_int_equal(cn_reg_url_parse(NULL, &u, why, sizeof(why)), -EINVAL);
}

static void names_and_keys(void **state)
{
	char k[160];

	assert_true(cn_reg_name_valid("node-1.a_b"));
	assert_false(cn_reg_name_valid(""));
	assert_false(cn_reg_name_valid("a:b"));
	assert_false(cn_reg_name_valid("../x"));
	assert_false(cn_reg_name_valid("a b"));
	assert_true(cn_reg_name_valid("0123456789012345678901234567890123456789012345678901234567890123"));
	assert_false(cn_reg_name_valid("01234567890123456789012345678901234567890123456789012345678901234"));
	cn_reg_key_node(k, sizeof(k), "prod", "n1");
	assert_string_equal(k, "cachenode:prod:node:n1");
	cn_reg_key_nodes(k, sizeof(k), "prod");
	assert_string_equal(k, "cachenode:prod:nodes");
	cn_reg_key_events(k, sizeof(k), "prod");
	assert_string_equal(k, "cachenode:prod:events");
}

static struct cn_reg_record sample(void)
{
	struct cn_reg_record r = {
		.l1_capacity = 1ull << 36,
		.l1_used = 12345,
		.chunks = 7,
		.hit_rate = 0.875,
		.health = true,
		.started_at = 1700000000000ull,
		.updated_at = 1700000005000ull,
		.heartbeat_ms = 1000,
	};

	strcpy(r.node_id, "n1");
	strcpy(r.cluster, "prod");
	strcpy(r.address, "10.0.0.5:7700");
	strcpy(r.transport, "verbs");
	strcpy(r.rdma_dev, "mlx5_0");
	strcpy(r.gid, "fe80::1");
	strcpy(r.http, "10.0.0.5:9190");
	strcpy(r.reason, "ok");
	strcpy(r.version, "0.1.0");
	return r;
}

/* The record as HSET would write it, read back as HGETALL gives it. */
static void round_trip(void **state)
{
	struct cn_reg_record in = sample(), out;
	const char *names[64], *vals[64];
	char buf[4096], why[160];
	int n = cn_reg_record_format(&in, names, vals, buf, sizeof(buf));

	assert_int_equal(n, (int)cn_reg_field_count);
	assert_int_equal(cn_reg_record_parse(names, vals, NULL, (size_t)n, "prod", "n1", &out, why,
					     sizeof(why)), 0);
	assert_string_equal(out.node_id, "n1");
	assert_string_equal(out.address, in.address);
	assert_string_equal(out.transport, "verbs");
	assert_string_equal(out.rdma_dev, "mlx5_0");
	assert_string_equal(out.gid, "fe80::1");
	assert_int_equal(out.l1_capacity, in.l1_capacity);
	assert_int_equal(out.l1_used, 12345);
	assert_int_equal(out.chunks, 7);
	assert_true(out.hit_rate > 0.8749 && out.hit_rate < 0.8751);
	assert_true(out.health);
	assert_int_equal(out.started_at, in.started_at);
	assert_int_equal(out.updated_at, in.updated_at);
	assert_int_equal(out.heartbeat_ms, 1000);
	/* too small a buffer: refused, not cut */
	assert_int_equal(cn_reg_record_format(&in, names, vals, buf, 64), -ENOSPC);
	/* a field a newer writer added is ignored; an optional field may be missing */
	names[n] = "future_field";
	vals[n] = "whatever";
	assert_int_equal(cn_reg_record_parse(names, vals, NULL, (size_t)n + 1, "prod", "n1", &out,
					     why, sizeof(why)), 0);
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], "gid") == 0)
			names[i] = "not_gid";
	assert_int_equal(cn_reg_record_parse(names, vals, NULL, (size_t)n, "prod", "n1", &out, why,
					     sizeof(why)), 0);
	assert_string_equal(out.gid, "");
}

/* Replace field @f's value with @v, parse, and expect a refusal naming @expect. */
static void refuse(const char *f, const char *v, const char *expect)
{
	struct cn_reg_record in = sample(), out;
	const char *names[64], *vals[64];
	char buf[4096], why[160] = "";
	int n = cn_reg_record_format(&in, names, vals, buf, sizeof(buf));
	bool found = false;

	for (int i = 0; i < n; i++)
		if (strcmp(names[i], f) == 0) {
			vals[i] = v;
			found = true;
		}
	assert_true(found);
	if (cn_reg_record_parse(names, vals, NULL, (size_t)n, "prod", "n1", &out, why,
				sizeof(why)) != -EINVAL)
		fail_msg("%s='%s' accepted", f, v);
	if (strstr(why, expect) == NULL)
		fail_msg("%s='%s': reason '%s' does not say '%s'", f, v, why, expect);
}

static void garbage(void **state)
{
	struct cn_reg_record in = sample(), out;
	const char *names[64], *vals[64];
	char buf[4096], why[160];
	int n;

	refuse("l1_used", "banana", "field l1_used: not a number");
	refuse("l1_used", "-1", "not a number");
	refuse("l1_used", "99999999999999999999999", "not a number");
	refuse("hit_rate", "1.5", "field hit_rate");
	refuse("hit_rate", "nan", "field hit_rate");
	refuse("health", "maybe", "field health");
	refuse("transport", "pigeon", "field transport");
	refuse("address", "nowhere", "field address");
	refuse("address", "1.2.3.4:0", "field address");
	refuse("address", "::1:80", "field address"); /* IPv6 needs brackets */
	refuse("node_id", "n2", "node_id 'n2' under the key of 'n1'");
	refuse("cluster", "other", "cluster 'other'");
	refuse("version", "a\nb", "not printable");
	refuse("heartbeat_ms", "0", "heartbeat_ms");
	refuse("reason", "\x01", "not printable");

	/* a missing required field, no fields, too many */
	n = cn_reg_record_format(&in, names, vals, buf, sizeof(buf));
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], "address") == 0)
			names[i] = "adress";
	assert_int_equal(cn_reg_record_parse(names, vals, NULL, (size_t)n, "prod", "n1", &out, why,
					     sizeof(why)), -EINVAL);
	assert_string_equal(why, "no field address");
	assert_int_equal(cn_reg_record_parse(names, vals, NULL, 0, "prod", "n1", &out, why,
					     sizeof(why)), -EINVAL);
	assert_int_equal(cn_reg_record_parse(names, vals, NULL, CN_REG_MAX_FIELDS + 1, "prod", "n1",
					     &out, why, sizeof(why)), -EINVAL);
	/* a value with a NUL inside (HGETALL gives lengths): refused */
	n = cn_reg_record_format(&in, names, vals, buf, sizeof(buf));
	{
		size_t lens[64];

		for (int i = 0; i < n; i++)
			lens[i] = strlen(vals[i]);
		for (int i = 0; i < n; i++)
			if (strcmp(names[i], "version") == 0)
				lens[i] += 1; /* the terminating NUL counted as data */
		assert_int_equal(cn_reg_record_parse(names, vals, lens, (size_t)n, "prod", "n1", &out,
						     why, sizeof(why)), -EINVAL);
	}
}

static void liveness(void **state)
{
	struct cn_reg_record r = sample(); /* heartbeat 1000 ms, updated at T */
	uint64_t t = r.updated_at;

	assert_true(cn_reg_record_live(&r, t));
	assert_true(cn_reg_record_live(&r, t + 2999));
	assert_false(cn_reg_record_live(&r, t + 3000)); /* 3 heartbeats old: dead */
	assert_int_equal(cn_reg_record_age_ms(&r, t + 1234), 1234);
	/* a writer whose clock is ahead: age 0, live */
	assert_int_equal(cn_reg_record_age_ms(&r, t - 500), 0);
	assert_true(cn_reg_record_live(&r, t - 500));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(urls),
		cmocka_unit_test(names_and_keys),
		cmocka_unit_test(round_trip),
		cmocka_unit_test(garbage),
		cmocka_unit_test(liveness),
	};

	return cmocka_run_group_tests_name("reg_record", tests, NULL, NULL);
}
