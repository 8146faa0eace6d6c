/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cn_gpu.h without CUDA (meson -Dcuda=disabled, or no toolkit found): the
 * tier opens, is always absent and says why; every GPU call is -ENODEV.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cn_gpu.h"
#include "gpu_internal.h"

#define NONE_REASON "built without CUDA (meson -Dcuda=disabled or no toolkit at /usr/local/cuda)"

struct cn_gpu {
	pthread_mutex_t mu; /* info.rdma_* */
	struct cn_gpu_info info;
};

static void say(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
}

int cn_gpu_open(const struct cn_gpu_cfg *cfg, struct cn_gpu **out)
{
	struct cn_gpu *g;
	int off = 0;
	int rc;

	if (!out)
		return -EINVAL;
	rc = cn_gpu_cfg_check(cfg, &off);
	if (rc)
		return rc;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	pthread_mutex_init(&g->mu, NULL);
	snprintf(g->info.reason, sizeof(g->info.reason), "%s", off ? CN_GPU_OFF_REASON : NONE_REASON);
	snprintf(g->info.host_reason, sizeof(g->info.host_reason), "%s", g->info.reason);
	snprintf(g->info.rdma_mode, sizeof(g->info.rdma_mode), "none");
	snprintf(g->info.rdma_reason, sizeof(g->info.rdma_reason), "not probed");
	*out = g;
	return 0;
}

void cn_gpu_close(struct cn_gpu *g)
{
	if (!g)
		return;
	pthread_mutex_destroy(&g->mu);
	free(g);
}

bool cn_gpu_present(const struct cn_gpu *g)
{
	return false;
}

const char *cn_gpu_reason(const struct cn_gpu *g)
{
	return g ? g->info.reason : NONE_REASON;
}

void cn_gpu_get_info(const struct cn_gpu *g, struct cn_gpu_info *out)
{
	pthread_mutex_t *mu = (pthread_mutex_t *)&g->mu; /* the lock is not the state */

	pthread_mutex_lock(mu);
	*out = g->info;
	pthread_mutex_unlock(mu);
}

int cn_gpu_tput_get(const struct cn_gpu *g, unsigned dev, enum cn_gpu_dir dir,
		    struct cn_gpu_tput *out)
{
	(void)g;
	(void)dev;
	(void)dir;
	(void)out;
	return -ENOENT;
}

const struct cn_gpu_dev_stats *cn_gpu_dev_stats(const struct cn_gpu *g, unsigned dev)
{
	return NULL;
}

int cn_gpu_host_register(struct cn_gpu *g, void *base, size_t len)
{
	return -ENODEV;
}

int cn_gpu_region_open(struct cn_gpu *g, int dev, const uint8_t handle[CN_GPU_IPC_HANDLE_LEN],
		       uint64_t size, uint32_t *id, char *err, size_t errlen)
{
	say(err, errlen, NONE_REASON);
	return -ENODEV;
}

int cn_gpu_region_close(struct cn_gpu *g, uint32_t id)
{
	return -ENOENT;
}

uint64_t cn_gpu_region_size(struct cn_gpu *g, uint32_t id)
{
	return 0;
}

int cn_gpu_batch_submit(struct cn_gpu *g, unsigned core, uint32_t region, enum cn_gpu_dir dir,
			const struct cn_gpu_copy *c, uint32_t n, cn_gpu_done_fn done, void *arg,
			struct cn_gpu_batch **out)
{
	if (out)
		*out = NULL;
	return -ENODEV;
}

void cn_gpu_sync(struct cn_gpu *g)
{
	(void)g;
}

void cn_gpu_batch_free(struct cn_gpu *g, struct cn_gpu_batch *b)
{
}

int cn_gpu_runtime_probe(int *ndev, char *err, size_t errlen)
{
	if (ndev)
		*ndev = 0;
	say(err, errlen, NONE_REASON);
	return -ENODEV;
}

int cn_gpu_ptr_device(const void *p)
{
	return -1;
}

int cn_gpu_bus_id(int dev, char out[CN_GPU_BUS_ID_LEN])
{
	(void)dev;
	(void)out;
	return -ENODEV;
}

int cn_gpu_ipc_export(void *base, uint8_t handle[CN_GPU_IPC_HANDLE_LEN], int *dev, char *err,
		      size_t errlen)
{
	say(err, errlen, NONE_REASON);
	return -ENODEV;
}

int cn_gpu_copy_sync(void *dst, const void *src, size_t len)
{
	return -ENODEV;
}

int cn_gpu_pack(struct cn_gpu *g, void *dst, const void *base, const uint32_t *ids, uint32_t n,
		uint32_t block)
{
	return -ENODEV;
}

int cn_gpu_unpack(struct cn_gpu *g, void *base, const void *src, const uint32_t *ids, uint32_t n,
		  uint32_t block)
{
	return -ENODEV;
}

int cn_gpu_dmabuf(const void *p, size_t len, int *fd, uint64_t *offset, char *err, size_t errlen)
{
	say(err, errlen, NONE_REASON);
	return -ENODEV;
}

void cn_gpu_set_rdma_mode(struct cn_gpu *g, const char *mode, const char *reason)
{
	pthread_mutex_lock(&g->mu);
	snprintf(g->info.rdma_mode, sizeof(g->info.rdma_mode), "%s", mode ? mode : "none");
	snprintf(g->info.rdma_reason, sizeof(g->info.rdma_reason), "%s", reason ? reason : "");
	pthread_mutex_unlock(&g->mu);
}
