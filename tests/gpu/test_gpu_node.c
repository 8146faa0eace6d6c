/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GPU -> node -> GPU through the real daemon (meson test --suite gpu). Exits
 * 77 (meson's SKIP) and prints why when this process has no usable CUDA
 * device, or the node reports its GPU tier absent.
 *
 * With a device:
 *   - regions (the node copies, through CUDA IPC: the node is a second
 *     process): 1,000 chunks of 4 KiB..256 KiB written into a cudaMalloc'd
 *     buffer, registered with cn_client_gpu_register(), stored with
 *     cn_req.gpu in batches of 50, retrieved into a second registered buffer
 *     (batches of 50, caps exact), compared byte for byte on the host; the
 *     node's per-device counters moved by exactly the chunks and bytes;
 *     a range outside the region and an unknown region are CN_E_INVAL with
 *     nothing stored; unregistering works and the node stays healthy;
 *   - device pointers of this process (the library stages through host
 *     memory): 1,000 chunks stored with cn_client_store_device() and read
 *     back with cn_client_retrieve_device(), compared;
 *   - throughput, printed (not asserted): 256 x 1 MiB retrieved to the
 *     device through regions vs plain cudaMemcpyAsync host -> device of the
 *     same bytes, in the same run.
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
#include <time.h>

#include <cmocka.h>
#include <cuda_runtime_api.h>
#include <jansson.h>

#include <cachenode/client.h>
#include "cn_gpu.h"
#include "daemon.h"

#define NCHUNK	  1000u
#define CHUNK_MIN (4u << 10)
#define CHUNK_MAX (256u << 10)
#define BATCH	  50u
#define BW_CHUNK  (1u << 20)
#define BW_N	  256u

#define CUDA_OK(call)                                                                      \
	do {                                                                               \
		cudaError_t e_ = (call);                                                   \
		if (e_ != cudaSuccess)                                                     \
			fail_msg("%s: %s: %s", #call, cudaGetErrorName(e_),                \
				 cudaGetErrorString(e_));                                  \
	} while (0)

static struct cn_daemon d;
static struct cn_client *cli;
static uint32_t len_of[NCHUNK];
static uint64_t off_of[NCHUNK];
static size_t total;

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void fill(uint8_t *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(mix(seed + i / 8) >> (8 * (i % 8)));
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t dev_counter(const char *name)
{
	char path[128];
	uint64_t v = 0;

	snprintf(path, sizeof(path), "components.gpu.devices.0.counters.%s", name);
	assert_int_equal(cn_status_u64(d.addr, path, &v), 0);
	return v;
}

/* Store or retrieve chunks [first, first + n) at their offsets in @region. */
static void gpu_batch(uint8_t op, uint32_t region, uint32_t first, uint32_t n, int32_t *st)
{
	struct cn_key keys[BATCH];
	struct cn_buf bufs[BATCH];
	struct cn_gpu_loc at[BATCH];
	struct cn_req req = {.op = op, .nkeys = n, .keys = keys, .bufs = bufs, .status = st,
			     .gpu = at};

	for (uint32_t i = 0; i < n; i++) {
		keys[i] = cn_test_key("gpu-chunk-%u", first + i);
		memset(&bufs[i], 0, sizeof(bufs[i]));
		bufs[i].len = len_of[first + i];
		bufs[i].cap = len_of[first + i];
		at[i] = (struct cn_gpu_loc){.region = region, .off = off_of[first + i]};
	}
	if (cn_client_exec(cli, &req) != 0)
		fail_msg("%s of chunks %u..%u: %s", cn_op_name(op), first, first + n - 1,
			 cn_client_errmsg(cli));
	for (uint32_t i = 0; op == CN_OP_RETRIEVE && i < n; i++)
		assert_int_equal(bufs[i].len, len_of[first + i]);
}

static void regions_round_trip(void **state)
{
	uint8_t *host = malloc(total), *back = malloc(total);
	void *src = NULL, *dst = NULL;
	uint32_t rs = 0, rd = 0;
	int32_t st[BATCH];
	uint64_t d2h0 = dev_counter("d2h_bytes"), h2d0 = dev_counter("h2d_bytes");
	uint64_t d2hc0 = dev_counter("d2h_copies"), h2dc0 = dev_counter("h2d_copies");

	(void)state;
	assert_non_null(host);
	assert_non_null(back);
	fill(host, total, 42);
	CUDA_OK(cudaMalloc(&src, total));
	CUDA_OK(cudaMalloc(&dst, total));
	CUDA_OK(cudaMemcpy(src, host, total, cudaMemcpyHostToDevice));
	CUDA_OK(cudaMemset(dst, 0, total));
	assert_int_equal(cn_client_gpu_register(cli, src, total, &rs), 0);
	assert_int_equal(cn_client_gpu_register(cli, dst, total, &rd), 0);
	assert_true(rs != rd);
	for (uint32_t i = 0; i < NCHUNK; i += BATCH)
		gpu_batch(CN_OP_STORE, rs, i, BATCH, st);
	for (uint32_t i = 0; i < NCHUNK; i += BATCH)
		gpu_batch(CN_OP_RETRIEVE, rd, i, BATCH, st);
	CUDA_OK(cudaMemcpy(back, dst, total, cudaMemcpyDeviceToHost));
	for (uint32_t i = 0; i < NCHUNK; i++)
		if (memcmp(host + off_of[i], back + off_of[i], len_of[i]) != 0)
			fail_msg("chunk %u (%u bytes at %lu) differs after GPU -> node -> GPU", i,
				 len_of[i], (unsigned long)off_of[i]);
	assert_int_equal(dev_counter("d2h_copies") - d2hc0, NCHUNK);
	assert_int_equal(dev_counter("h2d_copies") - h2dc0, NCHUNK);
	assert_int_equal(dev_counter("d2h_bytes") - d2h0, total);
	assert_int_equal(dev_counter("h2d_bytes") - h2d0, total);

	/* bad places: the whole request refused, nothing stored */
	{
		struct cn_key k = cn_test_key("gpu-outside");
		struct cn_buf b = {.len = 4096};
		struct cn_gpu_loc at = {.region = rs, .off = total - 100};
		int32_t s1 = 0;
		struct cn_req req = {.op = CN_OP_STORE, .nkeys = 1, .keys = &k, .bufs = &b,
				     .status = &s1, .gpu = &at};
		uint32_t prefix = 9;

		assert_int_equal(cn_client_exec(cli, &req), -EINVAL);
		assert_non_null(strstr(cn_client_errmsg(cli), "outside the GPU region"));
		at.region = 999999;
		at.off = 0;
		assert_int_equal(cn_client_exec(cli, &req), -EINVAL);
		assert_non_null(strstr(cn_client_errmsg(cli), "not a GPU region"));
		assert_int_equal(cn_client_lookup(cli, &k, 1, &prefix, NULL), 0);
		assert_int_equal(prefix, 0);
	}
	assert_int_equal(cn_client_gpu_unregister(cli, rs), 0);
	assert_int_equal(cn_client_gpu_unregister(cli, rd), 0);
	assert_int_equal(cn_client_gpu_unregister(cli, rd), -EINVAL);
	assert_int_equal(cn_client_ping(cli), 0);
	CUDA_OK(cudaFree(src));
	CUDA_OK(cudaFree(dst));
	free(host);
	free(back);
}

static void device_pointers_round_trip(void **state)
{
	uint8_t *host = malloc(CHUNK_MAX), *back = malloc(CHUNK_MAX);
	void *dv = NULL, *dv2 = NULL;

	(void)state;
	CUDA_OK(cudaMalloc(&dv, CHUNK_MAX));
	CUDA_OK(cudaMalloc(&dv2, CHUNK_MAX));
	for (uint32_t i = 0; i < NCHUNK; i++) {
		struct cn_key k = cn_test_key("gpu-ptr-%u", i);
		uint32_t len = len_of[i], got = 0;

		fill(host, len, 1000 + i);
		CUDA_OK(cudaMemcpy(dv, host, len, cudaMemcpyHostToDevice));
		assert_int_equal(cn_client_store_device(cli, &k, dv, len), 0);
		assert_int_equal(cn_client_retrieve_device(cli, &k, dv2, CHUNK_MAX, &got), 0);
		assert_int_equal(got, len);
		CUDA_OK(cudaMemcpy(back, dv2, len, cudaMemcpyDeviceToHost));
		if (memcmp(host, back, len) != 0)
			fail_msg("device-pointer chunk %u differs", i);
	}
	CUDA_OK(cudaFree(dv));
	CUDA_OK(cudaFree(dv2));
	free(host);
	free(back);
}

/* 256 x 1 MiB to the device: node regions vs cudaMemcpyAsync of the same bytes. */
static void throughput_vs_memcpy(void **state)
{
	size_t len = (size_t)BW_N * BW_CHUNK;
	uint8_t *host = NULL;
	void *src = NULL, *dst = NULL;
	cudaStream_t s;
	uint32_t rs = 0, rd = 0;
	int32_t st[BATCH];
	double t0, node_s = 1e9, ref_s = 1e9;

	(void)state;
	CUDA_OK(cudaMallocHost((void **)&host, len));
	CUDA_OK(cudaMalloc(&src, len));
	CUDA_OK(cudaMalloc(&dst, len));
	CUDA_OK(cudaStreamCreate(&s));
	fill(host, len, 7);
	CUDA_OK(cudaMemcpy(src, host, len, cudaMemcpyHostToDevice));
	assert_int_equal(cn_client_gpu_register(cli, src, len, &rs), 0);
	assert_int_equal(cn_client_gpu_register(cli, dst, len, &rd), 0);
	for (uint32_t i = 0; i < BW_N; i++) {
		len_of[i] = BW_CHUNK;
		off_of[i] = (uint64_t)i * BW_CHUNK;
	}
	/* the 1 MiB chunks under keys of their own */
	for (uint32_t i = 0; i < BW_N; i += 32) {
		struct cn_key keys[32];
		struct cn_buf bufs[32];
		struct cn_gpu_loc at[32];
		struct cn_req req = {.op = CN_OP_STORE, .nkeys = 32, .keys = keys, .bufs = bufs,
				     .status = st, .gpu = at};

		for (uint32_t k = 0; k < 32; k++) {
			keys[k] = cn_test_key("gpu-bw-%u", i + k);
			bufs[k] = (struct cn_buf){.len = BW_CHUNK, .cap = BW_CHUNK};
			at[k] = (struct cn_gpu_loc){.region = rs, .off = off_of[i + k]};
		}
		assert_int_equal(cn_client_exec(cli, &req), 0);
	}
	for (int rep = 0; rep < 5; rep++) {
		t0 = now_s();
		for (uint32_t i = 0; i < BW_N; i += 32) {
			struct cn_key keys[32];
			struct cn_buf bufs[32];
			struct cn_gpu_loc at[32];
			struct cn_req req = {.op = CN_OP_RETRIEVE, .nkeys = 32, .keys = keys,
					     .bufs = bufs, .status = st, .gpu = at};

			for (uint32_t k = 0; k < 32; k++) {
				keys[k] = cn_test_key("gpu-bw-%u", i + k);
				bufs[k] = (struct cn_buf){.cap = BW_CHUNK};
				at[k] = (struct cn_gpu_loc){.region = rd, .off = off_of[i + k]};
			}
			assert_int_equal(cn_client_exec(cli, &req), 0);
		}
		if (now_s() - t0 < node_s)
			node_s = now_s() - t0;
		t0 = now_s();
		for (uint32_t i = 0; i < BW_N; i++)
			CUDA_OK(cudaMemcpyAsync((uint8_t *)dst + off_of[i], host + off_of[i], BW_CHUNK,
						cudaMemcpyHostToDevice, s));
		CUDA_OK(cudaStreamSynchronize(s));
		if (now_s() - t0 < ref_s)
			ref_s = now_s() - t0;
	}
	printf("# retrieve to GPU, %u x 1 MiB: node %.2f GB/s, cudaMemcpyAsync %.2f GB/s, "
	       "ratio %.2f (best of 5)\n",
	       BW_N, (double)len / node_s / 1e9, (double)len / ref_s / 1e9, ref_s / node_s);
	assert_int_equal(cn_client_gpu_unregister(cli, rs), 0);
	assert_int_equal(cn_client_gpu_unregister(cli, rd), 0);
	CUDA_OK(cudaStreamDestroy(s));
	CUDA_OK(cudaFree(src));
	CUDA_OK(cudaFree(dst));
	CUDA_OK(cudaFreeHost(host));
}

static int group_setup(void **state)
{
	const char *args[] = {"--l1-size", "2G", "--max-chunk", "1M", NULL};
	uint64_t ndev = 0;

	(void)state;
	if (cn_daemon_start(&d, args) < 0)
		return -1;
	/* devices[0] exists only when the tier is present */
	if (cn_status_u64(d.addr, "components.gpu.devices.0.ordinal", &ndev) < 0) {
		/* this process sees a device: the node on the same host must too */
		fprintf(stderr, "the node's GPU tier is absent (its log: %s)\n", d.log);
		return -1;
	}
	return cn_client_connect(d.addr, NULL, &cli);
}

static int group_teardown(void **state)
{
	int rc;

	(void)state;
	cn_client_close(&cli);
	rc = cn_daemon_stop(&d, SIGTERM, 20000);
	return rc;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(regions_round_trip),
		cmocka_unit_test(device_pointers_round_trip),
		cmocka_unit_test(throughput_vs_memcpy),
	};
	char why[CN_GPU_REASON_LEN];
	int ndev = 0;
	uint64_t off = 0;

	if (cn_gpu_runtime_probe(&ndev, why, sizeof(why)) < 0) {
		printf("SKIP: no usable CUDA device: %s\n", why);
		return 77;
	}
	signal(SIGPIPE, SIG_IGN);
	for (uint32_t i = 0; i < NCHUNK; i++) {
		len_of[i] = CHUNK_MIN + (uint32_t)(mix(i) % (CHUNK_MAX - CHUNK_MIN + 1));
		off_of[i] = off;
		off += (len_of[i] + 255u) & ~255u;
	}
	total = off;
	return cmocka_run_group_tests_name("gpu_node", tests, group_setup, group_teardown);
}
