/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The GPU tier where it is absent: built with CUDA on a host without a
 * device or driver (CI), or built without CUDA (gpu_none.c). The tier opens,
 * says why it is absent, and refuses every GPU call with -ENODEV; a bad cfg
 * is -EINVAL; mode "off" says it was disabled. The host reference of
 * pack/unpack is checked by hand. On a host with a device the absence checks
 * are skipped (said on stdout): the gpu suite (tests/gpu) covers that case.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cn_gpu.h"

#ifdef CN_HAVE_CUDA
#define BUILT_WITH_CUDA true
#else
#define BUILT_WITH_CUDA false
#endif

static void never_done(struct cn_gpu_batch *b, int status, void *arg)
{
	fail_msg("done called for a batch that was refused");
}

static struct cn_gpu *open_auto(void)
{
	struct cn_gpu_cfg cfg = {.ncores = 2, .mode = "auto"};
	struct cn_gpu *g = NULL;

	assert_int_equal(cn_gpu_open(&cfg, &g), 0);
	assert_non_null(g);
	return g;
}

/* Absent: present false, a reason in the runtime's words, info agrees. */
static void absent_says_why(void **state)
{
	struct cn_gpu *g = open_auto();
	struct cn_gpu_info info;
	const char *why = cn_gpu_reason(g);

	if (cn_gpu_present(g)) {
		printf("# a CUDA device is present: absence checks skipped (see the gpu suite)\n");
		cn_gpu_close(g);
		return;
	}
	printf("# tier absent: %s\n", why);
	assert_non_null(why);
	assert_true(strlen(why) > 0);
	if (BUILT_WITH_CUDA)
		assert_int_equal(strncmp(why, "cudaGetDeviceCount:", 19), 0);
	else
		assert_non_null(strstr(why, "built without CUDA"));

	memset(&info, 0xa5, sizeof(info));
	cn_gpu_get_info(g, &info);
	assert_int_equal(info.built, BUILT_WITH_CUDA);
	assert_false(info.present);
	assert_string_equal(info.reason, why);
	assert_int_equal(info.ndev, 0);
	assert_false(info.host_registered);
	assert_true(strlen(info.host_reason) > 0);
	assert_string_equal(info.rdma_mode, "none");
	assert_string_equal(info.rdma_reason, "not probed");
	assert_null(cn_gpu_dev_stats(g, 0));
	cn_gpu_close(g);
}

/* Absent: every GPU call is -ENODEV and leaves its outputs alone or cleared. */
static void absent_calls_enodev(void **state)
{
	struct cn_gpu *g = open_auto();
	uint8_t handle[CN_GPU_IPC_HANDLE_LEN] = {1, 2, 3};
	char host[256], err[CN_GPU_REASON_LEN];
	struct cn_gpu_copy c = {.host = host, .off = 0, .len = sizeof(host)};
	struct cn_gpu_batch *b = (struct cn_gpu_batch *)&c; /* must be cleared */
	uint32_t ids[2] = {0, 1}, id = 7;
	uint64_t off = 0;
	int fd = -1, dev = 5, ndev = 3;

	if (cn_gpu_present(g)) {
		printf("# a CUDA device is present: absence checks skipped (see the gpu suite)\n");
		cn_gpu_close(g);
		return;
	}
	err[0] = '\0';
	assert_int_equal(cn_gpu_region_open(g, 0, handle, 4096, &id, err, sizeof(err)), -ENODEV);
	assert_true(strlen(err) > 0);
	assert_int_equal(id, 7);
	assert_int_equal(cn_gpu_region_close(g, 1), -ENOENT);
	assert_int_equal(cn_gpu_region_size(g, 1), 0);
	assert_int_equal(cn_gpu_batch_submit(g, 0, 1, CN_GPU_D2H, &c, 1, never_done, NULL, &b),
			 -ENODEV);
	assert_null(b);
	assert_int_equal(cn_gpu_host_register(g, host, sizeof(host)), -ENODEV);
	assert_int_equal(cn_gpu_pack(g, host, host + 128, ids, 2, 16), -ENODEV);
	assert_int_equal(cn_gpu_unpack(g, host + 128, host, ids, 2, 16), -ENODEV);

	err[0] = '\0';
	assert_int_equal(cn_gpu_runtime_probe(&ndev, err, sizeof(err)), -ENODEV);
	assert_int_equal(ndev, 0);
	assert_true(strlen(err) > 0);
	err[0] = '\0';
	assert_int_equal(cn_gpu_ipc_export(host, handle, &dev, err, sizeof(err)), -ENODEV);
	{
		char bus[CN_GPU_BUS_ID_LEN];

		assert_int_equal(cn_gpu_bus_id(0, bus), -ENODEV);
		assert_int_equal(cn_gpu_dev_by_bus_id(g, "0000:3b:00.0"), -ENODEV);
		assert_int_equal(cn_gpu_dev_by_bus_id(g, ""), -ENODEV);
	}
	assert_true(strlen(err) > 0);
	assert_int_equal(dev, 5);
	assert_int_equal(cn_gpu_copy_sync(host, host + 128, 64), -ENODEV);
	err[0] = '\0';
	assert_int_equal(cn_gpu_dmabuf(host, sizeof(host), &fd, &off, err, sizeof(err)), -ENODEV);
	assert_true(strlen(err) > 0);
	assert_int_equal(fd, -1);
	assert_int_equal(cn_gpu_ptr_device(host), -1);
	assert_int_equal(cn_gpu_ptr_device(&fd), -1);
	cn_gpu_close(g);
}

/* Mode "off" is absent whatever the host has, and says so. */
static void mode_off_disabled(void **state)
{
	struct cn_gpu_cfg cfg = {.ncores = 1, .mode = "off"};
	struct cn_gpu *g = NULL;
	struct cn_gpu_info info;
	uint8_t handle[CN_GPU_IPC_HANDLE_LEN] = {0};
	uint32_t id;

	assert_int_equal(cn_gpu_open(&cfg, &g), 0);
	assert_false(cn_gpu_present(g));
	assert_string_equal(cn_gpu_reason(g), "disabled by --gpu off");
	cn_gpu_get_info(g, &info);
	assert_int_equal(info.built, BUILT_WITH_CUDA);
	assert_false(info.present);
	assert_string_equal(info.reason, "disabled by --gpu off");
	assert_int_equal(cn_gpu_region_open(g, 0, handle, 4096, &id, NULL, 0), -ENODEV);
	assert_int_equal(cn_gpu_host_register(g, handle, sizeof(handle)), -ENODEV);
	cn_gpu_close(g);
}

static void bad_cfg_einval(void **state)
{
	struct cn_gpu_cfg bad[] = {
		{.ncores = 0, .mode = "auto"},
		{.ncores = CN_MAX_CORES + 1, .mode = "auto"},
		{.ncores = 1, .mode = "on"},
		{.ncores = 1, .mode = ""},
		{.ncores = 1, .mode = NULL},
	};
	struct cn_gpu_cfg good = {.ncores = CN_MAX_CORES, .mode = "auto"};
	struct cn_gpu *g;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		g = NULL;
		assert_int_equal(cn_gpu_open(&bad[i], &g), -EINVAL);
		assert_null(g);
	}
	g = NULL;
	assert_int_equal(cn_gpu_open(NULL, &g), -EINVAL);
	assert_null(g);
	assert_int_equal(cn_gpu_open(&good, NULL), -EINVAL);
	assert_int_equal(cn_gpu_open(&good, &g), 0);
	cn_gpu_close(g);
	cn_gpu_close(NULL);
}

/* The rdma mode is recorded whether or not a device is there (the status tree shows it). */
static void rdma_mode_recorded(void **state)
{
	struct cn_gpu *g = open_auto();
	struct cn_gpu_info info;

	cn_gpu_set_rdma_mode(g, "staging", "no GPU: copies go through L1");
	cn_gpu_get_info(g, &info);
	assert_string_equal(info.rdma_mode, "staging");
	assert_string_equal(info.rdma_reason, "no GPU: copies go through L1");
	cn_gpu_close(g);
}

/* The metric table has a row per field of the stats struct. */
static void metric_table(void **state)
{
	assert_int_equal(cn_gpu_dev_metric_count,
			 sizeof(struct cn_gpu_dev_stats) / sizeof(uint64_t));
	assert_string_equal(cn_gpu_dev_metric_desc[0].name, "d2h_copies");
	assert_string_equal(cn_gpu_dev_metric_desc[6].name, "regions_open");
	assert_int_equal(cn_gpu_dev_metric_desc[6].type, CN_METRIC_GAUGE);
	assert_string_equal(cn_gpu_dev_metric_desc[cn_gpu_dev_metric_count - 1].name,
			    "kernel_launches");
}

/* Four 4-byte blocks 0x00..0x0f; pack ids {2, 0, 2, 3} (a repeat), by hand. */
/*
 * The throughput histogram's arithmetic (what cn_gpu_batch_free files each
 * batch under, and the quantiles the status tree and /metrics report).
 */
static void tput_buckets_and_quantiles(void **state)
{
	struct cn_gpu_tput t;

	(void)state;
	/* bounds double from 1/16 GB/s, the last is +inf */
	assert_true(cn_gpu_tput_le[0] == 0.0625);
	for (unsigned i = 1; i + 1 < CN_GPU_TPUT_BUCKETS; i++)
		assert_true(cn_gpu_tput_le[i] == 2 * cn_gpu_tput_le[i - 1]);
	assert_true(isinf(cn_gpu_tput_le[CN_GPU_TPUT_BUCKETS - 1]));
	/* bytes per ns are GB/s; a bound belongs to its own bucket */
	assert_int_equal(cn_gpu_tput_bucket(1000000000ull, 1000000000ull), 4);	  /* 1 GB/s */
	assert_int_equal(cn_gpu_tput_bucket(1000000001ull, 1000000000ull), 5);	  /* just over */
	assert_int_equal(cn_gpu_tput_bucket(25ull << 30, 1000000000ull), 9);	  /* 26.8 GB/s */
	assert_int_equal(cn_gpu_tput_bucket(1, 1000000000ull), 0);		  /* 1 B/s */
	assert_int_equal(cn_gpu_tput_bucket(1u << 20, 0), CN_GPU_TPUT_BUCKETS - 1); /* no time */
	assert_int_equal(cn_gpu_tput_bucket(300000, 1000), CN_GPU_TPUT_BUCKETS - 1); /* 300 GB/s */
	/* 10 batches: 7 at <= 16 GB/s, 2 at <= 32, 1 at <= 1 */
	memset(&t, 0, sizeof(t));
	assert_true(cn_gpu_tput_quantile(&t, 0.5) == 0);
	t.bucket[8] = 7;
	t.bucket[9] = 2;
	t.bucket[4] = 1;
	t.count = 10;
	assert_true(cn_gpu_tput_quantile(&t, 0.0) == 1);
	assert_true(cn_gpu_tput_quantile(&t, 0.10) == 1);
	assert_true(cn_gpu_tput_quantile(&t, 0.50) == 16);
	assert_true(cn_gpu_tput_quantile(&t, 0.80) == 16);
	assert_true(cn_gpu_tput_quantile(&t, 0.81) == 32);
	assert_true(cn_gpu_tput_quantile(&t, 1.0) == 32);
}

static void pack_ref_by_hand(void **state)
{
	uint8_t base[16], dst[16];
	const uint32_t ids[4] = {2, 0, 2, 3};
	const uint8_t want[16] = {8, 9, 10, 11, 0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15};

	for (unsigned i = 0; i < sizeof(base); i++)
		base[i] = (uint8_t)i;
	memset(dst, 0xee, sizeof(dst));
	cn_gpu_pack_ref(dst, base, ids, 4, 4);
	assert_memory_equal(dst, want, sizeof(want));
	cn_gpu_pack_ref(dst, base, ids, 0, 4); /* nothing */
	assert_memory_equal(dst, want, sizeof(want));
}

/* Scatter three 4-byte blocks to ids {3, 1, 0}: block 2 keeps its bytes; then round trip. */
static void unpack_ref_by_hand(void **state)
{
	uint8_t base[16], src[12], back[12];
	const uint32_t ids[3] = {3, 1, 0};
	const uint8_t want[16] = {0xb8, 0xb9, 0xba, 0xbb, 0xb4, 0xb5, 0xb6, 0xb7,
				  0xee, 0xee, 0xee, 0xee, 0xb0, 0xb1, 0xb2, 0xb3};

	for (unsigned i = 0; i < sizeof(src); i++)
		src[i] = (uint8_t)(0xb0 + i);
	memset(base, 0xee, sizeof(base));
	cn_gpu_unpack_ref(base, src, ids, 3, 4);
	assert_memory_equal(base, want, sizeof(want));
	cn_gpu_pack_ref(back, base, ids, 3, 4);
	assert_memory_equal(back, src, sizeof(src));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(absent_says_why),
		cmocka_unit_test(absent_calls_enodev),
		cmocka_unit_test(mode_off_disabled),
		cmocka_unit_test(bad_cfg_einval),
		cmocka_unit_test(rdma_mode_recorded),
		cmocka_unit_test(metric_table),
		cmocka_unit_test(tput_buckets_and_quantiles),
		cmocka_unit_test(pack_ref_by_hand),
		cmocka_unit_test(unpack_ref_by_hand),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
