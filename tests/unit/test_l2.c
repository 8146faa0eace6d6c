/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The L2 tier without a node: rendezvous placement (balance, and stability
 * when a node joins or leaves), the static --peer parser, cn_l2_owner()
 * agreeing with the placement function, and the pool against a peer that
 * refuses connections (the job comes back through its wake handle with a
 * miss, the peer is marked down, the next job skips it).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <cachenode/client.h>
#include "cn_l2.h"
#include "cn_test_wake.h"

#define NKEYS 20000u

static struct cn_key key_n(unsigned i)
{
	struct cn_key k;
	char text[32];

	snprintf(text, sizeof(text), "key-%u", i);
	cn_key_parse(text, &k);
	return k;
}

/* Every node gets about 1/n of the keys. */
static void rendezvous_balances(void **state)
{
	const char *ids[5] = {"n0", "n1", "n2", "n3", "n4"};
	unsigned count[5] = {0};

	for (unsigned i = 0; i < NKEYS; i++) {
		struct cn_key k = key_n(i);
		count[cn_l2_rendezvous(&k, ids, 5)]++;
	}
	for (unsigned n = 0; n < 5; n++) {
		/* 4000 expected; binomial sd ~57: +-10% is over 7 sd */
		assert_in_range(count[n], NKEYS / 5 * 9 / 10, NKEYS / 5 * 11 / 10);
	}
}

/* A node joins: only keys that move to it move (about 1/(n+1) of them). */
static void rendezvous_join_moves_only_to_new(void **state)
{
	const char *ids[6] = {"n0", "n1", "n2", "n3", "n4", "n5"};
	unsigned moved = 0;

	for (unsigned i = 0; i < NKEYS; i++) {
		struct cn_key k = key_n(i);
		unsigned before = cn_l2_rendezvous(&k, ids, 5), after = cn_l2_rendezvous(&k, ids, 6);

		if (before != after) {
			assert_int_equal(after, 5); /* never between old nodes */
			moved++;
		}
	}
	assert_in_range(moved, NKEYS / 6 * 9 / 10, NKEYS / 6 * 11 / 10);
}

/* A node leaves: exactly its keys move, spread over the others; the rest stay. */
static void rendezvous_leave_moves_only_its_keys(void **state)
{
	const char *ids[5] = {"n0", "n1", "n2", "n3", "n4"};
	const char *without2[4] = {"n0", "n1", "n3", "n4"};
	unsigned map[4] = {0, 1, 3, 4}, got[5] = {0};

	for (unsigned i = 0; i < NKEYS; i++) {
		struct cn_key k = key_n(i);
		unsigned before = cn_l2_rendezvous(&k, ids, 5);
		unsigned after = map[cn_l2_rendezvous(&k, without2, 4)];

		if (before != 2)
			assert_int_equal(after, before);
		else
			got[after]++;
	}
	for (unsigned n = 0; n < 5; n++)
		if (n != 2)
			assert_true(got[n] > 0); /* n2's keys are shared out, not dumped on one */
}

/* The order of the ids does not matter: placement depends on names only. */
static void rendezvous_order_independent(void **state)
{
	const char *a[3] = {"x", "y", "z"}, *b[3] = {"z", "x", "y"};

	for (unsigned i = 0; i < 1000; i++) {
		struct cn_key k = key_n(i);

		assert_string_equal(a[cn_l2_rendezvous(&k, a, 3)], b[cn_l2_rendezvous(&k, b, 3)]);
	}
}

static void static_parse(void **state)
{
	struct cn_l2_static st;
	char err[200];

	assert_int_equal(cn_l2_static_parse("a@127.0.0.1:1,b.x@[::1]:2", &st, err, sizeof(err)), 0);
	assert_int_equal(st.n, 2);
	assert_string_equal(st.peers[0].id, "a");
	assert_string_equal(st.peers[0].addr, "127.0.0.1:1");
	assert_string_equal(st.peers[1].id, "b.x");
	assert_string_equal(st.peers[1].addr, "[::1]:2");
	assert_string_equal(st.peers[0].transport, "tcp"); /* no suffix: tcp, as before */
	assert_string_equal(st.peers[1].transport, "tcp");
	/* a transport per peer: /tcp, /verbs, /auto after the address */
	assert_int_equal(cn_l2_static_parse("a@10.0.0.1:7700/verbs,b@[::1]:2/auto,c@h:3/tcp,d@h:4",
					    &st, err, sizeof(err)),
			 0);
	assert_int_equal(st.n, 4);
	assert_string_equal(st.peers[0].addr, "10.0.0.1:7700");
	assert_string_equal(st.peers[0].transport, "verbs");
	assert_string_equal(st.peers[1].addr, "[::1]:2");
	assert_string_equal(st.peers[1].transport, "auto");
	assert_string_equal(st.peers[2].transport, "tcp");
	assert_string_equal(st.peers[3].addr, "h:4");
	assert_string_equal(st.peers[3].transport, "tcp");
	assert_int_equal(cn_l2_static_parse("a@h:1,b@h:2/rdma", &st, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "'b@h:2/rdma': unknown transport 'rdma'"));
	assert_int_equal(cn_l2_static_parse("a@h:1/", &st, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unknown transport ''"));
	assert_int_equal(cn_l2_static_parse("a@h:1/verbs/tcp", &st, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unknown transport"));
	assert_int_equal(cn_l2_static_parse("a@/verbs", &st, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "ID@HOST:PORT[/tcp|/verbs|/auto]"));
	assert_int_equal(cn_l2_static_parse("a/verbs@h:1", &st, err, sizeof(err)), -EINVAL);
	assert_int_equal(cn_l2_static_parse("", &st, err, sizeof(err)), 0);
	assert_int_equal(st.n, 0);
	assert_int_equal(cn_l2_static_parse("127.0.0.1:7700", &st, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "ID@HOST:PORT"));
	assert_int_equal(cn_l2_static_parse("a@host", &st, err, sizeof(err)), -EINVAL);
	assert_int_equal(cn_l2_static_parse("a b@h:1", &st, err, sizeof(err)), -EINVAL);
	assert_int_equal(cn_l2_static_parse("a@h:1,,b@h:2", &st, err, sizeof(err)), -EINVAL);
	assert_int_equal(cn_l2_static_parse("a@h:1,a@h:2", &st, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "twice"));
}

/* ---- a tier with a static source ---- */

static void owner_matches_placement(void **state)
{
	struct cn_l2_static st;
	struct cn_l2 *l2 = NULL;
	char err[200];
	const char *ids[3] = {"me", "p1", "p2"};
	struct cn_l2_cfg cfg = {.self_id = "me", .source = &cn_l2_static_source,
				.source_arg = &st, .timeout_ms = 500, .max_chunk = 1 << 20};

	/* the list names this node too: it is recognised by its id */
	assert_int_equal(cn_l2_static_parse("p1@127.0.0.1:1,me@127.0.0.1:2,p2@127.0.0.1:3", &st,
					    err, sizeof(err)),
			 0);
	assert_int_equal(cn_l2_create(&cfg, &l2), 0);
	assert_int_equal(cn_l2_npeers(l2), 2);
	assert_true(cn_l2_active(l2));
	for (unsigned i = 0; i < 2000; i++) {
		struct cn_key k = key_n(i);
		unsigned want = cn_l2_rendezvous(&k, ids, 3);
		uint16_t o = cn_l2_owner(l2, &k);
		struct cn_l2_peer_view v;

		if (want == 0) {
			assert_int_equal(o, CN_L2_SELF);
			continue;
		}
		assert_int_equal(cn_l2_peer_get(l2, o, &v), 0);
		assert_string_equal(v.info.id, ids[want]);
	}
	cn_l2_destroy(&l2);
	assert_null(l2);

	/* a list without this node: it owns nothing, every key has a peer owner */
	assert_int_equal(cn_l2_static_parse("p1@127.0.0.1:1,p2@127.0.0.1:3", &st, err,
					    sizeof(err)),
			 0);
	assert_int_equal(cn_l2_create(&cfg, &l2), 0);
	assert_false(cn_l2_self_member(l2));
	for (unsigned i = 0; i < 2000; i++) {
		struct cn_key k = key_n(i);
		unsigned want = cn_l2_rendezvous(&k, ids + 1, 2) + 1;
		uint16_t o = cn_l2_owner(l2, &k);
		struct cn_l2_peer_view v;

		assert_int_not_equal(o, CN_L2_SELF);
		assert_int_equal(cn_l2_peer_get(l2, o, &v), 0);
		assert_string_equal(v.info.id, ids[want]);
	}
	cn_l2_destroy(&l2);
}

static void refused_peer_backs_off(void **state)
{
	struct cn_test_waiter wt = CN_TEST_WAITER_INIT;
	struct cn_l2_static st;
	struct cn_l2 *l2 = NULL;
	struct cn_l2_peer_view v;
	struct cn_l2_job *j;
	char spec[64], err[200];
	struct cn_l2_cfg cfg = {.self_id = "me", .source = &cn_l2_static_source,
				.source_arg = &st, .timeout_ms = 500, .max_chunk = 1 << 20};

	snprintf(spec, sizeof(spec), "dead@127.0.0.1:%u", cn_test_dead_port());
	assert_int_equal(cn_l2_static_parse(spec, &st, err, sizeof(err)), 0);
	assert_int_equal(cn_l2_create(&cfg, &l2), 0);

	for (int round = 0; round < 2; round++) {
		j = cn_l2_job_alloc(2);
		assert_non_null(j);
		j->op = CN_L2_FETCH;
		j->wake = (struct cn_wake){.post = cn_test_wake_post, .worker = &wt};
		j->n = 2;
		for (unsigned i = 0; i < 2; i++)
			j->it[i] = (struct cn_l2_item){.key = key_n(i), .peer = 0};
		assert_int_equal(cn_l2_submit(l2, j), 0);
		assert_ptr_equal((struct cn_l2_job *)cn_test_wait_job(&wt), j);
		for (unsigned i = 0; i < 2; i++) {
			assert_int_equal(j->it[i].status, CN_E_NOENT); /* a miss, not an error */
			assert_null(j->it[i].data);
		}
		free(j);
		assert_int_equal(cn_l2_peer_get(l2, 0, &v), 0);
		assert_true(v.down);
		assert_true(cn_l2_peer_down(l2, 0));
		assert_in_range(v.down_ms_left, 1, 1000); /* the first back-off step: 1 s */
		assert_int_equal(v.st.marked_down, 1);	  /* round 2 did not try again */
		assert_int_equal(v.st.errors, 1);
		assert_int_equal(v.st.down_skips, round == 0 ? 0 : 2);
		assert_int_equal(v.st.connects, 0);
		assert_non_null(strstr(v.last_error, "connect"));
	}
	cn_l2_destroy(&l2);
}

/* Jobs still queued at stop come back (misses): nothing is lost. */
static void stop_hands_back_queued_jobs(void **state)
{
	struct cn_test_waiter wt = CN_TEST_WAITER_INIT;
	struct cn_l2_static st;
	struct cn_l2 *l2 = NULL;
	char spec[64], err[200];
	struct cn_l2_cfg cfg = {.self_id = "me", .source = &cn_l2_static_source,
				.source_arg = &st, .timeout_ms = 500, .max_chunk = 1 << 20,
				.threads = 1, .queue_max = 4};
	unsigned back = 0, submitted = 0;

	snprintf(spec, sizeof(spec), "dead@127.0.0.1:%u", cn_test_dead_port());
	assert_int_equal(cn_l2_static_parse(spec, &st, err, sizeof(err)), 0);
	assert_int_equal(cn_l2_create(&cfg, &l2), 0);
	for (unsigned i = 0; i < 16; i++) {
		struct cn_l2_job *j = cn_l2_job_alloc(1);

		j->op = CN_L2_LOOKUP;
		j->wake = (struct cn_wake){.post = cn_test_wake_post, .worker = &wt};
		j->n = 1;
		j->it[0] = (struct cn_l2_item){.key = key_n(i), .peer = 0};
		if (cn_l2_submit(l2, j) == 0)
			submitted++;
		else
			free(j); /* -EAGAIN: queue full, still ours */
	}
	cn_l2_stop(l2);
	while (wt.got != NULL) {
		struct cn_l2_job *j = (struct cn_l2_job *)cn_test_wait_job(&wt);

		assert_non_null(j);

		assert_false(j->it[0].present);
		free(j);
		back++;
	}
	assert_int_equal(back, submitted);
	cn_l2_destroy(&l2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rendezvous_balances),
		cmocka_unit_test(rendezvous_join_moves_only_to_new),
		cmocka_unit_test(rendezvous_leave_moves_only_its_keys),
		cmocka_unit_test(rendezvous_order_independent),
		cmocka_unit_test(static_parse),
		cmocka_unit_test(owner_matches_placement),
		cmocka_unit_test(refused_peer_backs_off),
		cmocka_unit_test(stop_hands_back_queued_jobs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
