/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What both implementations of cn_gpu.h share: the metric table, the cfg
 * check, and the host reference of pack/unpack (so the kernels have one
 * reference to be tested against, with or without CUDA).
 */
#include <errno.h>
#include <string.h>

#include "cn_gpu.h"
#include "gpu_internal.h"

const struct cn_metric_desc cn_gpu_dev_metric_desc[] = {CN_GPU_DEV_METRICS(CN_METRIC_DESC)};
const unsigned cn_gpu_dev_metric_count = 0 CN_GPU_DEV_METRICS(CN_METRIC_COUNT);

int cn_gpu_cfg_check(const struct cn_gpu_cfg *cfg, int *off)
{
	if (!cfg || cfg->ncores == 0 || cfg->ncores > CN_MAX_CORES || !cfg->mode)
		return -EINVAL;
	if (strcmp(cfg->mode, "auto") == 0)
		*off = 0;
	else if (strcmp(cfg->mode, "off") == 0)
		*off = 1;
	else
		return -EINVAL;
	return 0;
}

void cn_gpu_pack_ref(void *dst, const void *base, const uint32_t *ids, uint32_t n, uint32_t block)
{
	for (uint32_t i = 0; i < n; i++)
		memcpy((char *)dst + (size_t)i * block, (const char *)base + (size_t)ids[i] * block,
		       block);
}

void cn_gpu_unpack_ref(void *base, const void *src, const uint32_t *ids, uint32_t n,
		       uint32_t block)
{
	for (uint32_t i = 0; i < n; i++)
		memcpy((char *)base + (size_t)ids[i] * block, (const char *)src + (size_t)i * block,
		       block);
}
