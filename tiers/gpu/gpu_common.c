/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What both implementations of cn_gpu.h share: the metric table, the cfg
 * check, and the host reference of pack/unpack (so the kernels have one
 * reference to be tested against, with or without CUDA).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cn_gpu.h"
#include "gpu_internal.h"

const struct cn_metric_desc cn_gpu_dev_metric_desc[] = {CN_GPU_DEV_METRICS(CN_METRIC_DESC)};
const unsigned cn_gpu_dev_metric_count = 0 CN_GPU_DEV_METRICS(CN_METRIC_COUNT);

const double cn_gpu_tput_le[CN_GPU_TPUT_BUCKETS] = {
	0.0625, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, INFINITY,
};

unsigned cn_gpu_tput_bucket(uint64_t bytes, uint64_t ns)
{
	double gbps = ns ? (double)bytes / (double)ns : INFINITY; /* bytes per ns = GB/s */
	unsigned i = 0;

	while (i < CN_GPU_TPUT_BUCKETS - 1 && gbps > cn_gpu_tput_le[i])
		i++;
	return i;
}

double cn_gpu_tput_quantile(const struct cn_gpu_tput *t, double q)
{
	uint64_t want, seen = 0;

	if (t->count == 0)
		return 0;
	want = (uint64_t)ceil(q * (double)t->count);
	if (want == 0)
		want = 1;
	for (unsigned i = 0; i < CN_GPU_TPUT_BUCKETS; i++) {
		seen += t->bucket[i];
		if (seen >= want)
			return cn_gpu_tput_le[i];
	}
	return cn_gpu_tput_le[CN_GPU_TPUT_BUCKETS - 1];
}

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

int cn_gpu_dev_by_bus_id(const struct cn_gpu *g, const char *bus_id)
{
	struct cn_gpu_info *in;
	int dev = -ENODEV;

	if (g == NULL || bus_id == NULL || bus_id[0] == '\0')
		return -ENODEV;
	in = malloc(sizeof(*in));
	if (in == NULL)
		return -ENODEV;
	cn_gpu_get_info(g, in);
	for (unsigned i = 0; in->present && i < in->ndev && i < CN_GPU_MAX_DEVICES; i++)
		if (strcasecmp(in->dev[i].pci_bus_id, bus_id) == 0) {
			dev = in->dev[i].ordinal;
			break;
		}
	free(in);
	return dev;
}
