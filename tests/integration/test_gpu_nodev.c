/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPU tier when there is no usable GPU, against the real daemon: it runs
 * on every machine. One node runs with --gpu off (absent on any machine,
 * GPU or not), one with the default --gpu auto (absent here unless CUDA
 * finds a device; the test then checks the node agrees with this process).
 * Every GPU request gets CN_E_NODEV with the tier's reason, the connection
 * and the node keep serving, and the counters move by exactly what was sent.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include <cachenode/client.h>
#include "cn_gpu.h"
#include "daemon.h"

static struct cn_daemon off; /* --gpu off */
static struct cn_daemon dflt; /* --gpu auto (the default) */

static void send_frame(int fd, uint8_t op, uint16_t flags, uint64_t id, const void *p, uint32_t len)
{
	assert_int_equal(cn_raw_send_frame(fd, op, flags, id, p, len), 0);
}

static void recv_reply(int fd, struct cn_proto_hdr *h, char *buf, size_t cap)
{
	assert_int_equal(cn_raw_recv_reply(fd, h, buf, cap), 0);
}

static uint64_t stat_of(const struct cn_daemon *d, const char *path)
{
	uint64_t v = 0;

	assert_int_equal(cn_status_u64(d->addr, path, &v), 0);
	return v;
}

/* components.gpu of @d's status tree (new reference). */
static json_t *gpu_status(const struct cn_daemon *d)
{
	struct cn_client *c = NULL;
	json_t *root, *g;
	char *doc = NULL;

	assert_int_equal(cn_client_connect(d->addr, NULL, &c), 0);
	assert_int_equal(cn_client_status(c, &doc), 0);
	cn_client_close(&c);
	root = json_loads(doc, 0, NULL);
	free(doc);
	assert_non_null(root);
	assert_true(json_is_true(json_object_get(root, "is_healthy")));
	g = json_object_get(json_object_get(root, "components"), "gpu");
	assert_non_null(g);
	json_incref(g);
	json_decref(root);
	return g;
}

/* One {key, len, region, off} descriptor batch of @n chunks in region 1. */
static uint32_t gpu_batch(uint8_t *p, uint32_t n, const char *prefix)
{
	cn_put_le32(p, n);
	cn_put_le32(p + 4, 0);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *d = p + CN_PROTO_BATCH_HDR + i * CN_PROTO_RDMA_DESC;
		struct cn_key k = cn_test_key("%s-%u", prefix, i);

		memcpy(d, &k, CN_KEY_LEN);
		cn_put_le32(d + 32, 4096);
		cn_put_le32(d + 36, 1);
		cn_put_le64(d + 40, (uint64_t)i * 4096);
	}
	return CN_PROTO_BATCH_HDR + n * CN_PROTO_RDMA_DESC;
}

/* ---- cases ---- */

static void status_says_absent_and_why(void **state)
{
	json_t *g = gpu_status(&off);

	(void)state;
	assert_true(json_is_false(json_object_get(g, "present")));
	assert_non_null(strstr(json_string_value(json_object_get(g, "absent_reason")), "off"));
	assert_string_equal(json_string_value(json_object_get(g, "mode")), "off");
	assert_true(json_is_true(json_object_get(g, "is_healthy")));
	assert_int_equal(json_array_size(json_object_get(g, "devices")), 0);
	assert_true(json_is_false(json_object_get(g, "host_registered")));
	json_decref(g);
	assert_true(cn_daemon_log_contains(&off, "GPU tier absent"));
}

/*
 * The default node says what CUDA says to this process: no device here means
 * absent with cudaGetDeviceCount's words (or "built without CUDA").
 */
static void auto_mode_agrees_with_cuda(void **state)
{
	char why[CN_GPU_REASON_LEN];
	int ndev = 0;
	bool usable = cn_gpu_runtime_probe(&ndev, why, sizeof(why)) == 0;
	json_t *g = gpu_status(&dflt);
	const char *reason = json_string_value(json_object_get(g, "absent_reason"));

	(void)state;
	assert_int_equal(json_is_true(json_object_get(g, "present")), usable);
	if (!usable) {
		printf("# no usable CUDA device here: %s\n", why);
		if (json_is_true(json_object_get(g, "built")))
			assert_true(strncmp(reason, "cudaGetDeviceCount: ", 20) == 0);
		else
			assert_non_null(strstr(reason, "without CUDA"));
		assert_true(cn_daemon_log_contains(&dflt, reason));
	} else {
		assert_int_equal(json_array_size(json_object_get(g, "devices")), (size_t)ndev);
	}
	json_decref(g);
}

/*
 * GPU_REGISTER, STORE and RETRIEVE with CN_F_GPU on one connection: each is
 * CN_E_NODEV with the reason, the payload is skipped, and the same
 * connection then stores and retrieves a chunk byte-exact.
 */
static void gpu_requests_get_nodev_and_connection_serves(void **state)
{
	uint8_t reg[CN_PROTO_GPU_REG_LEN] = {0}, batch[8 + 4 * CN_PROTO_RDMA_DESC];
	uint64_t nodev0 = stat_of(&off, "components.engine.requests.gpu_nodev");
	uint64_t err0 = stat_of(&off, "components.engine.requests.req_errors");
	struct cn_proto_hdr h;
	struct cn_client *c = NULL;
	char msg[1024];
	uint32_t len;
	int fd = cn_raw_connect(off.addr);

	(void)state;
	assert_true(fd >= 0);
	cn_put_le64(reg + 8, 1 << 20);
	send_frame(fd, CN_OP_GPU_REGISTER, 0, 1, reg, sizeof(reg));
	len = gpu_batch(batch, 4, "gpu-store");
	send_frame(fd, CN_OP_STORE, CN_F_GPU, 2, batch, len);
	len = gpu_batch(batch, 3, "gpu-retr");
	send_frame(fd, CN_OP_RETRIEVE, CN_F_GPU, 3, batch, len);
	send_frame(fd, CN_OP_PING, 0, 4, "ok?", 3);
	for (uint64_t id = 1; id <= 3; id++) {
		recv_reply(fd, &h, msg, sizeof(msg));
		assert_int_equal(h.req_id, id);
		assert_int_equal(h.status, CN_E_NODEV);
		assert_non_null(strstr(msg, "no GPU tier"));
		assert_non_null(strstr(msg, "disabled"));
	}
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.req_id, 4);
	assert_int_equal(h.status, CN_OK);
	assert_string_equal(msg, "ok?");
	close(fd);
	assert_int_equal(stat_of(&off, "components.engine.requests.gpu_nodev"), nodev0 + 3);
	assert_int_equal(stat_of(&off, "components.engine.requests.req_errors"), err0 + 3);
	/* nothing of the refused STORE became visible */
	assert_int_equal(cn_client_connect(off.addr, NULL, &c), 0);
	for (uint32_t i = 0; i < 4; i++) {
		struct cn_key k = cn_test_key("gpu-store-%u", i);
		uint8_t b[8];

		assert_int_equal(cn_client_retrieve(c, &k, b, sizeof(b), &len), -ENOENT);
	}
	{
		struct cn_key k = cn_test_key("after-gpu");
		char in[5000], out[5000];

		for (size_t i = 0; i < sizeof(in); i++)
			in[i] = (char)(i * 7);
		assert_int_equal(cn_client_store(c, &k, in, sizeof(in)), 0);
		assert_int_equal(cn_client_retrieve(c, &k, out, sizeof(out), &len), 0);
		assert_int_equal(len, sizeof(in));
		assert_memory_equal(in, out, sizeof(in));
	}
	cn_client_close(&c);
}

/* Flags in the wrong place are request-level errors, checked before the tier. */
static void gpu_flag_misuse_is_inval(void **state)
{
	uint8_t batch[8 + CN_PROTO_RDMA_DESC], keys[8 + 32];
	struct cn_proto_hdr h;
	struct cn_key k = cn_test_key("flag");
	char msg[1024];
	uint32_t len = gpu_batch(batch, 1, "flags");
	int fd = cn_raw_connect(off.addr);

	(void)state;
	assert_true(fd >= 0);
	cn_put_le32(keys, 1);
	cn_put_le32(keys + 4, 0);
	memcpy(keys + 8, &k, 32);
	send_frame(fd, CN_OP_LOOKUP, CN_F_GPU, 1, keys, sizeof(keys));
	send_frame(fd, CN_OP_STORE, CN_F_GPU | CN_F_RDMA, 2, batch, len);
	send_frame(fd, CN_OP_PING, 0, 3, NULL, 0);
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.status, CN_E_INVAL);
	assert_non_null(strstr(msg, "CN_F_GPU on an opcode other than STORE/RETRIEVE"));
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.status, CN_E_INVAL);
	assert_non_null(strstr(msg, "CN_F_GPU and CN_F_RDMA together"));
	recv_reply(fd, &h, msg, sizeof(msg));
	assert_int_equal(h.req_id, 3);
	assert_int_equal(h.status, CN_OK);
	close(fd);
}

/*
 * The client library: GPU calls fail with -ENODEV and say why, whether this
 * process has no CUDA (here) or the node has no GPU (--gpu off on a GPU
 * machine); the client stays usable.
 */
static void client_gpu_calls_fail_cleanly(void **state)
{
	struct cn_client *c = NULL;
	struct cn_key k = cn_test_key("client-gpu");
	char why[CN_GPU_REASON_LEN], buf[64] = "host bytes";
	int ndev = 0;
	bool cuda = cn_gpu_runtime_probe(&ndev, why, sizeof(why)) == 0;
	uint32_t region = 0, len = 0;
	void *dev = NULL;

	(void)state;
	assert_int_equal(cn_client_connect(off.addr, NULL, &c), 0);
	if (!cuda) {
		/* any pointer: the library refuses before looking at it */
		dev = buf;
		assert_int_equal(cn_client_gpu_register(c, dev, sizeof(buf), &region), -ENODEV);
		assert_non_null(strstr(cn_client_errmsg(c), "no usable CUDA device in this process"));
		assert_int_equal(cn_client_store_device(c, &k, dev, sizeof(buf)), -ENODEV);
		assert_int_equal(cn_client_retrieve_device(c, &k, dev, sizeof(buf), &len), -ENODEV);
	}
	/* a GPU request reaches the node, which has no tier: -ENODEV */
	{
		struct cn_buf b = {.len = 4096};
		struct cn_gpu_loc at = {.region = 7, .off = 0};
		int32_t st = 0;
		struct cn_req req = {.op = CN_OP_STORE, .nkeys = 1, .keys = &k, .bufs = &b,
				     .status = &st, .gpu = &at};

		assert_int_equal(cn_client_exec(c, &req), -ENODEV);
		assert_int_equal(st, CN_E_NODEV);
		assert_non_null(strstr(cn_client_errmsg(c), "no GPU tier"));
	}
	/* GPUDirect RDMA needs an RDMA transport: over tcp it says to stage instead */
	{
		const char *mode = NULL;

		assert_int_equal(cn_client_mem_register_device(c, buf, sizeof(buf), &mode),
				 -EOPNOTSUPP);
		assert_string_equal(mode, "staging");
		assert_non_null(strstr(cn_client_errmsg(c), "has no RDMA"));
	}
	assert_int_equal(cn_client_ping(c), 0);
	cn_client_close(&c);
}

static int group_setup(void **state)
{
	const char *a_off[] = {"--l1-size", "64M", "--max-chunk", "1M", "--gpu", "off", NULL};
	const char *a_dflt[] = {"--l1-size", "64M", "--max-chunk", "1M", NULL};

	(void)state;
	signal(SIGPIPE, SIG_IGN);
	if (cn_daemon_start(&off, a_off) < 0)
		return -1;
	return cn_daemon_start(&dflt, a_dflt);
}

static int group_teardown(void **state)
{
	int r1 = cn_daemon_stop(&off, SIGTERM, 10000);
	int r2 = cn_daemon_stop(&dflt, SIGTERM, 10000);

	(void)state;
	if (r1 != 0 || r2 != 0)
		fprintf(stderr, "daemon exit status %d, %d\n", r1, r2);
	return r1 != 0 ? r1 : r2;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(status_says_absent_and_why),
		cmocka_unit_test(auto_mode_agrees_with_cuda),
		cmocka_unit_test(gpu_requests_get_nodev_and_connection_serves),
		cmocka_unit_test(gpu_flag_misuse_is_inval),
		cmocka_unit_test(client_gpu_calls_fail_cleanly),
	};
	return cmocka_run_group_tests_name("gpu_nodev", tests, group_setup, group_teardown);
}
